"""All models, re-exported so that Alembic and the app see every table."""

from app.models.audit import AuditEvent
from app.models.base import Base, utcnow
from app.models.campaign import Campaign, Invitation, OfferCode, SendSlot
from app.models.customer import Customer, Order
from app.models.enums import (
    CampaignStatus,
    ContactPreference,
    CustomerStatus,
    ImportKind,
    ImportStatus,
    ImprovementStatus,
    InvitationStatus,
    OfferKind,
    Outcome,
    StaffRole,
    StopReason,
    SuppressionReason,
    WouldReturn,
)
from app.models.import_job import ImportJob
from app.models.improvement import Improvement, improvement_responses
from app.models.response import Response
from app.models.setting import Setting
from app.models.staff import StaffUser
from app.models.suppression import Suppression

__all__ = [
    "AuditEvent",
    "Base",
    "Campaign",
    "CampaignStatus",
    "ContactPreference",
    "Customer",
    "CustomerStatus",
    "ImportJob",
    "ImportKind",
    "ImportStatus",
    "Improvement",
    "ImprovementStatus",
    "Invitation",
    "InvitationStatus",
    "OfferCode",
    "OfferKind",
    "Order",
    "Outcome",
    "Response",
    "SendSlot",
    "Setting",
    "StaffRole",
    "StaffUser",
    "StopReason",
    "Suppression",
    "SuppressionReason",
    "WouldReturn",
    "improvement_responses",
    "utcnow",
]
