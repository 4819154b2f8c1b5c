"""Staff-written Markdown to sanitised HTML: links and emphasis, never script."""

from __future__ import annotations

import threading

import markdown as markdown_lib
import nh3
from markupsafe import Markup

ALLOWED_TAGS = {"p", "br", "strong", "em", "ul", "ol", "li", "a", "blockquote", "code", "h3", "h4"}
_local = threading.local()


def _converter() -> markdown_lib.Markdown:
    """One parser per thread: building one costs more than converting a paragraph."""
    converter = getattr(_local, "converter", None)
    if converter is None:
        converter = _local.converter = markdown_lib.Markdown(output_format="html")
    return converter


def render_markdown(text: str) -> Markup:
    """Markdown to HTML, sanitised by nh3 (ammonia): safe to put in any page as it is."""
    converter = _converter()
    try:
        html = converter.convert(text or "")
    finally:
        converter.reset()
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
    )
    return Markup(clean)  # noqa: S704 - sanitised by nh3 above
