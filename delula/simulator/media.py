"""The simulator's media: the SVG poster a simulated job "renders" and its thumbnail.

Both are pure functions of a :class:`~delula.simulator.ticket.Ticket`, so every process draws the
same picture for the same request id: a gradient coloured from the id, the recipe or model name,
the prompt, the form values and the id itself. Any text is escaped into valid XML.
"""
from __future__ import annotations

import colorsys
import hashlib
import re

from .ticket import Ticket, cut

__all__ = ["CONTENT_TYPE_SVG", "render_poster", "render_thumbnail"]

CONTENT_TYPE_SVG = "image/svg+xml"


def _palette(ticket: Ticket) -> tuple[str, str, str]:
    hue = int(hashlib.sha256(ticket.request_id.encode()).hexdigest()[:4], 16) / 0xFFFF

    def hexcolor(h: float, s: float, v: float) -> str:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))

    return hexcolor(hue, 0.62, 0.78), hexcolor(hue + 0.11, 0.72, 0.46), hexcolor(hue + 0.23, 0.65, 0.20)


def render_poster(ticket: Ticket) -> str:
    """A 1280x720 SVG poster: gradient, recipe/model name, prompt, form values, request id."""
    c1, c2, c3 = _palette(ticket)
    title = cut(ticket.title or ticket.model_id, 30)
    rid = ticket.request_id
    short_id = rid if len(rid) <= 56 else f"{rid[:40]}…{rid[-12:]}"
    when = ticket.submitted_datetime.strftime("%Y-%m-%d %H:%M:%S UTC")
    sans = "Inter, 'Helvetica Neue', Arial, sans-serif"
    mono = "'JetBrains Mono', Menlo, Consolas, monospace"
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<svg xmlns="http://www.w3.org/2000/svg" width="1280" height="720" viewBox="0 0 1280 720" '
        f'role="img" aria-label="{_attr(title)} - simulated generation">',
        f"<title>{_xml(title)} - Delula simulated generation</title>",
        f"<desc>model {_xml(ticket.model_id)}; request id {_xml(rid)}</desc>",
        "<defs>",
        '<linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="{c1}"/><stop offset="0.55" stop-color="{c2}"/>'
        f'<stop offset="1" stop-color="{c3}"/></linearGradient>',
        '<radialGradient id="glow" cx="0.5" cy="0.5" r="0.5">'
        '<stop offset="0" stop-color="#ffffff" stop-opacity="0.35"/>'
        '<stop offset="1" stop-color="#ffffff" stop-opacity="0"/></radialGradient>',
        "</defs>",
        '<rect width="1280" height="720" fill="url(#bg)"/>',
        '<circle cx="1060" cy="170" r="330" fill="url(#glow)"/>',
        f'<circle cx="140" cy="700" r="260" fill="{c1}" fill-opacity="0.18"/>',
        '<path d="M0 560 C 320 470, 640 660, 1280 520 L 1280 720 L 0 720 Z" fill="#000000" fill-opacity="0.18"/>',
    ]
    for x in range(24, 1280, 64):  # film-strip perforations
        out.append(f'<rect x="{x}" y="14" width="30" height="16" rx="4" fill="#ffffff" fill-opacity="0.14"/>')
        out.append(f'<rect x="{x}" y="690" width="30" height="16" rx="4" fill="#ffffff" fill-opacity="0.14"/>')
    out += [
        f'<g font-family="{_attr(sans)}" fill="#ffffff">',
        '<text x="72" y="104" font-size="20" letter-spacing="5" fill-opacity="0.8">'
        "DELULA · SIMULATED GENERATION</text>",
        f'<text x="72" y="184" font-size="62" font-weight="700">{_xml(title)}</text>',
        f'<text x="72" y="228" font-size="22" font-family="{_attr(mono)}" fill-opacity="0.78">'
        f"{_xml(cut(ticket.model_id, 64))}</text>",
    ]
    y = 290
    if ticket.prompt:
        for i, line in enumerate(_wrap(f"“{ticket.prompt}”", 62, 3)):
            out.append(f'<text x="72" y="{y + i * 36}" font-size="27" font-style="italic" '
                       f'fill-opacity="0.92">{_xml(line)}</text>')
        y += 36 * min(3, len(_wrap(f"“{ticket.prompt}”", 62, 3))) + 24
    for i, (key, value) in enumerate(ticket.values[:6]):
        col, row = i % 2, i // 2
        x, yy = 72 + col * 430, y + row * 58
        text = cut(f"{key}: {value}", 34)
        out.append(f'<rect x="{x}" y="{yy}" width="{min(400, 40 + 13 * len(text))}" height="42" rx="21" '
                   'fill="#ffffff" fill-opacity="0.16" stroke="#ffffff" stroke-opacity="0.35"/>')
        out.append(f'<text x="{x + 20}" y="{yy + 28}" font-size="20">'
                   f'<tspan font-weight="700">{_xml(cut(key, 16))}:</tspan> '
                   f"{_xml(cut(value, 33 - min(len(key), 16)))}</text>")
    out += [
        '<circle cx="1060" cy="400" r="92" fill="#ffffff" fill-opacity="0.16" stroke="#ffffff" '
        'stroke-opacity="0.7" stroke-width="4"/>',
        '<path d="M1030 350 L1030 450 L1118 400 Z" fill="#ffffff" fill-opacity="0.92"/>',
        f'<text x="72" y="636" font-size="17" font-family="{_attr(mono)}" fill-opacity="0.75">'
        f"request {_xml(short_id)}</text>",
        f'<text x="72" y="664" font-size="17" fill-opacity="0.75">'
        f"{ticket.duration:g} s simulated · submitted {when} · seed {int(ticket.nonce, 16)}</text>",
        "</g>",
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def render_thumbnail(ticket: Ticket) -> str:
    """A 320x180 SVG thumbnail."""
    c1, c2, c3 = _palette(ticket)
    title = cut(ticket.title or ticket.model_id, 22)
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180" viewBox="0 0 320 180" '
        f'role="img" aria-label="{_attr(title)}">',
        "<defs>",
        '<linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="{c1}"/><stop offset="0.55" stop-color="{c2}"/>'
        f'<stop offset="1" stop-color="{c3}"/></linearGradient>',
        "</defs>",
        '<rect width="320" height="180" fill="url(#bg)"/>',
        '<circle cx="160" cy="78" r="30" fill="#ffffff" fill-opacity="0.2" stroke="#ffffff" stroke-opacity="0.7" stroke-width="2"/>',
        '<path d="M150 62 L150 94 L178 78 Z" fill="#ffffff"/>',
        f'<text x="160" y="148" text-anchor="middle" font-family="Inter, Arial, sans-serif" font-size="17" '
        f'font-weight="700" fill="#ffffff">{_xml(title)}</text>',
        "</svg>",
    ]) + "\n"


_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", str(text))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _xml(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;").replace("\r", "&#13;")


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        while len(word) > width:  # very long words are hard-split
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        candidate = f"{line} {word}".strip()
        if len(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = cut(lines[-1], width - 1) if len(lines[-1]) >= width - 1 else lines[-1] + "…"
    return lines
