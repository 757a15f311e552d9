"""Python source as HTML lines with token classes, for staff reading tenant code.

Built on `tokenize`, so nothing is executed and every piece of text is escaped.
"""

from __future__ import annotations

import builtins
import io
import keyword
import tokenize

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

BUILTIN_NAMES = frozenset(dir(builtins))
STRING_TOKENS = {"STRING", "FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END"}


def token_class(token: tokenize.TokenInfo, previous: tokenize.TokenInfo | None) -> str:
    kind = tokenize.tok_name[token.type]
    if kind in STRING_TOKENS:
        return "tok-str"
    if kind == "COMMENT":
        return "tok-com"
    if kind == "NUMBER":
        return "tok-num"
    if kind != "NAME":
        return ""
    if previous is not None and previous.string in ("def", "class"):
        return "tok-def"
    if keyword.iskeyword(token.string):
        return "tok-kw"
    return "tok-builtin" if token.string in BUILTIN_NAMES else ""


def highlight(code: str) -> list[SafeString]:
    """The code as escaped HTML, one string per line, tokens wrapped in classed spans.

    Text between tokens is copied as it is, so nothing is ever lost: code that stops
    tokenizing part-way is shown plain from there on.
    """
    starts = [0]
    for line in io.StringIO(code).readlines():
        starts.append(starts[-1] + len(line))
    html, done, previous = [], 0, None
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            css = token_class(token, previous)
            if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                previous = token
            start = starts[token.start[0] - 1] + token.start[1]
            end = starts[token.end[0] - 1] + token.end[1]
            if not css or start < done or end <= start:
                continue
            html.append(escape(code[done:start]))
            # A span never crosses a line break, so the result splits into lines.
            html.append(
                "\n".join(
                    f'<span class="{css}">{escape(piece)}</span>' if piece else ""
                    for piece in code[start:end].split("\n")
                )
            )
            done = end
    except (tokenize.TokenError, SyntaxError):
        pass
    html.append(escape(code[done:]))
    lines = "".join(html).split("\n")
    if code.endswith("\n"):
        lines.pop()
    return [mark_safe(line) for line in lines]  # every piece was escaped above
