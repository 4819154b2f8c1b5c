"""Every status, role and answer choice, defined once and used everywhere."""

import enum


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    TRIAGER = "triager"
    VIEWER = "viewer"


class CustomerStatus(enum.StrEnum):
    ACTIVE = "active"
    SUPPRESSED = "suppressed"
    ERASED = "erased"


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    NEVER = "never"
    UNFEASIBLE = "unfeasible"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    NO_CONSENT = "no_consent"
    MANUAL = "manual"
    ERASED = "erased"


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SENDING = "sending"
    SENT = "sent"
    PAUSED = "paused"


class OfferKind(enum.StrEnum):
    NONE = "none"
    SHARED = "shared"  # one code for everyone
    UNIQUE = "unique"  # one code per recipient, from an uploaded list


class InvitationStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"


class Outcome(enum.StrEnum):
    NEVER = "never"
    ACTIONABLE = "actionable"
    UNFEASIBLE = "unfeasible"


class StopReason(enum.StrEnum):
    """Question 1: what made you stop buying from us?"""

    PRICE = "price"
    QUALITY = "quality"
    SERVICE = "service"
    DELIVERY = "delivery"
    BETTER_ELSEWHERE = "better_elsewhere"
    NO_LONGER_NEEDED = "no_longer_needed"
    MOVED_OR_CLOSED = "moved_or_closed"
    OTHER = "other"


class WouldReturn(enum.StrEnum):
    """Question 3: would you consider buying from us again?"""

    YES = "yes"
    MAYBE = "maybe"
    NEVER = "never"


class ContactPreference(enum.StrEnum):
    """Question 4: how should we get back to you?"""

    EMAIL = "email"
    PHONE = "phone"
    NONE = "none"


class ImprovementStatus(enum.StrEnum):
    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class ImportKind(enum.StrEnum):
    CUSTOMERS = "customers"
    ORDERS = "orders"
    SUPPRESSIONS = "suppressions"


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
