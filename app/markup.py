"""Staff-written Markdown to sanitised HTML: links and emphasis, never script."""

from __future__ import annotations

import threading

import markdown as markdown_lib
import nh3
from markupsafe import Markup

ALLOWED_TAGS = {"p", "br", "strong", "em", "ul", "ol", "li", "a", "blockquote", "code", "h3", "h4"}
_local = threading.local()


def _converter(hard_breaks: bool) -> markdown_lib.Markdown:
    """One parser per thread and kind: building one costs more than converting a paragraph."""
    name = "breaks_converter" if hard_breaks else "converter"
    converter = getattr(_local, name, None)
    if converter is None:
        extensions = ["nl2br"] if hard_breaks else []
        converter = markdown_lib.Markdown(output_format="html", extensions=extensions)
        setattr(_local, name, converter)
    return converter


def render_markdown(text: str, *, hard_breaks: bool = False) -> Markup:
    """Markdown to HTML, sanitised by nh3 (ammonia): safe to put in any page as it is.

    With hard_breaks, a new line inside a paragraph stays a line break (text typed as it should
    look, like an email's body)."""
    converter = _converter(hard_breaks)
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
