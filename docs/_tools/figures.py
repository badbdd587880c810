"""Draw the docs' explanatory figures as SVG: this file is their source.

    python docs/_tools/figures.py            # writes docs/img/{layering,host-mode,mixed-mode}.svg
    python docs/_tools/figures.py OUTDIR     # the same, elsewhere

Each figure is data (boxes, arrows, notes) in the functions below; ``render`` turns it
into SVG with the standard library only, deterministically, so that
``tests/test_docs.py`` can check that the committed pictures are what this file draws.
Change a figure here, run the script, commit both.

- ``layering``: what a library author writes on, down to the framework (index, concepts).
- ``host-mode``: ``polyloop.run`` beside host mode (concepts, library authors).
- ``mixed-mode``: the four frameworks on one gevent hub, in one thread (mixed mode).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
#: Estimated width of one character, as a fraction of the font size, in the sans-serif
#: and the monospace font (checked below, so that a label that would overflow its box
#: fails the script instead of the picture).
CHAR_W = 0.56
MONO_CHAR_W = 0.62
#: Font sizes of a box's title and lines. The figures are ~860 px wide and the docs'
#: column shows them at about two thirds of that, so these are as large as fits.
TITLE_SIZE, LINE_SIZE = 16, 13

#: (fill, stroke, text) per kind of box.
STYLES = {
    "app": ("#f5f5f5", "#757575", "#212121"),
    "core": ("#e8eaf6", "#3949ab", "#1a237e"),
    "toolkit": ("#ede7f6", "#5e35b1", "#311b92"),
    "session": ("#c5cae9", "#283593", "#1a237e"),
    "adapter": ("#e0f2f1", "#00796b", "#004d40"),
    "framework": ("#fff3e0", "#ef6c00", "#bf360c"),
    "os": ("#eceff1", "#546e7a", "#263238"),
    "panel": ("#ffffff", "#b0bec5", "#37474f"),
}


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float
    title: str
    lines: tuple[str, ...] = ()
    kind: str = "core"
    mono_lines: bool = True
    dashed: bool = False


@dataclass
class Arrow:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str = ""
    both: bool = False


@dataclass
class Note:
    x: float
    y: float
    text: str
    anchor: str = "start"
    size: float = 12
    italic: bool = True
    colour: str = "#455a64"


@dataclass
class Figure:
    name: str
    width: int
    height: int
    title: str
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def _text_width(text: str, size: float, mono: bool = False) -> float:
    return len(text) * size * (MONO_CHAR_W if mono else CHAR_W)


def render(fig: Figure) -> str:
    """The SVG text of ``fig``."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{fig.width}" height="{fig.height}"'
        f' viewBox="0 0 {fig.width} {fig.height}" role="img" aria-label="{escape(fig.title)}"'
        f' font-family="{escape(FONT)}">',
        f"<title>{escape(fig.title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5"'
        ' markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#546e7a"/></marker></defs>',
        f'<rect x="0" y="0" width="{fig.width}" height="{fig.height}" fill="#ffffff"/>',
    ]
    for box in fig.boxes:
        out += _box(box)
    for arrow in fig.arrows:
        out += _arrow(arrow)
    for note in fig.notes:
        style = ' font-style="italic"' if note.italic else ""
        out.append(
            f'<text x="{note.x:g}" y="{note.y:g}" font-size="{note.size:g}"'
            f' text-anchor="{note.anchor}" fill="{note.colour}"{style}>{escape(note.text)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _box(box: Box) -> list[str]:
    fill, stroke, ink = STYLES[box.kind]
    dash = ' stroke-dasharray="6 4"' if box.dashed else ""
    out = [
        f'<rect x="{box.x:g}" y="{box.y:g}" width="{box.w:g}" height="{box.h:g}" rx="8"'
        f' fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
    ]
    cx = box.x + box.w / 2
    title_size, line_size = TITLE_SIZE, LINE_SIZE
    needed = [_text_width(box.title, title_size)]
    needed += [_text_width(line, line_size, box.mono_lines) for line in box.lines]
    if max(needed) > box.w - 12:
        raise ValueError(f"a label of the box {box.title!r} is wider than the box ({box.w:g})")
    lines_h = len(box.lines) * (line_size + 4)
    top = box.y + (box.h - (title_size + 4 + lines_h)) / 2 + title_size
    if box.kind == "panel":
        top = box.y + 22
    out.append(
        f'<text x="{cx:g}" y="{top:g}" font-size="{title_size}" font-weight="600"'
        f' text-anchor="middle" fill="{ink}">{escape(box.title)}</text>'
    )
    family = f' font-family="{escape(MONO)}"' if box.mono_lines else ""
    for i, line in enumerate(box.lines):
        y = top + 6 + (i + 1) * (line_size + 4)
        out.append(
            f'<text x="{cx:g}" y="{y:g}" font-size="{line_size}" text-anchor="middle"'
            f' fill="{ink}"{family}>{escape(line)}</text>'
        )
    return out


def _arrow(arrow: Arrow) -> list[str]:
    start = ' marker-start="url(#arrow)"' if arrow.both else ""
    out = [
        f'<line x1="{arrow.x1:g}" y1="{arrow.y1:g}" x2="{arrow.x2:g}" y2="{arrow.y2:g}"'
        f' stroke="#546e7a" stroke-width="1.5" marker-end="url(#arrow)"{start}/>'
    ]
    if arrow.label:
        mx, my = (arrow.x1 + arrow.x2) / 2, (arrow.y1 + arrow.y2) / 2
        out.append(
            f'<text x="{mx + 8:g}" y="{my + 4:g}" font-size="11" fill="#455a64"'
            f' font-style="italic">{escape(arrow.label)}</text>'
        )
    return out


# --------------------------------------------------------------------------------------
# The figures
# --------------------------------------------------------------------------------------

FRAMEWORKS = ("asyncio", "Twisted", "gevent", "Tornado")


def layering() -> Figure:
    fig = Figure(
        "layering", 860, 560, "polyloop's layers, from a library's code down to the framework"
    )
    x0, w = 150, 690
    fig.boxes += [
        Box(
            x0,
            20,
            w,
            50,
            "Your library or application",
            ("await polyloop.open_tcp_stream(...)   ·   class MyProtocol(polyloop.Protocol)",),
            kind="app",
        ),
        Box(x0, 84, 340, 72, "Stream", ("receive · send · send_eof · aclose",)),
        Box(
            x0 + 350,
            84,
            340,
            72,
            "Toolkit",
            ("TaskGroup · CancelScope · Event · Lock", "on the session's futures"),
            kind="toolkit",
        ),
        Box(
            x0,
            172,
            w,
            62,
            "Protocol / Transport (PEP 3156)",
            ("data_received · eof_received · write · close · abort · pause_writing",),
        ),
        Box(
            x0,
            254,
            w,
            62,
            "Session: one backend bound to one live loop",
            ("polyloop.current_backend()  ·  spawn · call_later · connect_tcp · listen_tcp",),
            kind="session",
        ),
    ]
    col_w, gap = 165, 10
    for i, name in enumerate(FRAMEWORKS):
        x = x0 + i * (col_w + gap)
        fig.boxes.append(
            Box(
                x,
                346,
                col_w,
                62,
                f"polyloop_{name.lower()}",
                ("backend adapter",),
                kind="adapter",
                mono_lines=False,
            )
        )
        native = {
            "asyncio": "event loop",
            "Twisted": "private reactor",
            "gevent": "the thread's hub",
            "Tornado": "IOLoop, IOStream",
        }[name]
        fig.boxes.append(
            Box(x, 428, col_w, 62, name, (native,), kind="framework", mono_lines=False)
        )
        fig.arrows.append(Arrow(x + col_w / 2, 408, x + col_w / 2, 428))
    fig.boxes.append(Box(x0, 508, w, 36, "Sockets, timers, threads: the OS", kind="os"))
    fig.arrows += [
        Arrow(x0 + 170, 156, x0 + 170, 172),
        Arrow(x0 + w / 2, 234, x0 + w / 2, 254),
        Arrow(x0 + w / 2, 316, x0 + w / 2, 346, "entry point polyloop.backends"),
    ]
    # What is written where, down the left side.
    fig.notes += [
        Note(135, 182, "written once,", "end"),
        Note(135, 198, "in the core,", "end"),
        Note(135, 214, "the same on", "end"),
        Note(135, 230, "every backend", "end"),
        Note(135, 372, "one small", "end"),
        Note(135, 388, "adapter each", "end"),
        Note(135, 454, "unchanged,", "end"),
        Note(135, 470, "unpatched", "end"),
    ]
    return fig


def host_mode() -> Figure:
    fig = Figure(
        "host-mode",
        860,
        470,
        "polyloop.run owns a fresh loop; host mode borrows the application's",
    )
    left, right, pw = 20, 440, 400
    fig.boxes += [
        Box(left, 10, pw, 450, "polyloop.run: polyloop owns the loop", kind="panel"),
        Box(right, 10, pw, 450, "Host mode: the application owns the loop", kind="panel"),
    ]
    bx, bw = left + 30, pw - 60
    fig.boxes += [
        Box(
            bx,
            50,
            bw,
            56,
            "A script, a test, polyloop serve",
            ('polyloop.run(main, backend="twisted")',),
            kind="app",
        ),
        Box(
            bx,
            130,
            bw,
            56,
            "A fresh loop, made for this run",
            ("reactor / hub / IOLoop / event loop",),
            kind="framework",
        ),
        Box(bx, 210, bw, 56, "An owned session", ("session.owned is True",), kind="session"),
        Box(bx, 290, bw, 56, "main() and your library", ("await lib.fetch(...)",), kind="core"),
        Box(
            bx,
            370,
            bw,
            64,
            "When main returns: dispose",
            ("tasks cancelled, connections closed,", "the loop taken apart; nothing left"),
            kind="os",
            mono_lines=False,
        ),
    ]
    rx = right + 30
    fig.boxes += [
        Box(
            rx,
            50,
            bw,
            56,
            "The application's own loop",
            ("asyncio.run · reactor.run · IOLoop · hub",),
            kind="framework",
        ),
        Box(
            rx,
            130,
            bw,
            56,
            "Its code, in its own tasks",
            ("a handler, a Deferred, a greenlet",),
            kind="app",
            mono_lines=False,
        ),
        Box(
            rx,
            210,
            bw,
            56,
            "Your library, called there",
            ("await lib.fetch(...)  (no polyloop.run)",),
            kind="core",
        ),
        Box(
            rx,
            290,
            bw,
            56,
            "A borrowed session",
            ("current_backend() finds the running loop",),
            kind="session",
        ),
        Box(
            rx,
            370,
            bw,
            64,
            "The loop goes on",
            ("the session ends with the loop,", "or early with session.aclose()"),
            kind="os",
            mono_lines=False,
        ),
    ]
    for x in (bx + bw / 2, rx + bw / 2):
        for y in (106, 186, 266, 346):
            fig.arrows.append(Arrow(x, y, x, y + 24))
    return fig


def mixed_mode() -> Figure:
    fig = Figure(
        "mixed-mode",
        860,
        480,
        "Mixed mode: asyncio, Tornado, Twisted and gevent in one thread, on one gevent hub",
    )
    fig.boxes.append(Box(10, 10, 840, 460, "One OS thread", kind="panel"))
    names = ("asyncio", "Tornado", "Twisted", "gevent")
    col_w, gap, x0 = 190, 15, 25
    xs = [x0 + i * (col_w + gap) for i in range(4)]
    for x, name in zip(xs, names, strict=True):
        fig.boxes.append(
            Box(
                x,
                50,
                col_w,
                56,
                f"{name} session",
                (f'session("{name.lower()}")',),
                kind="session",
            )
        )
    # The machinery, bottom up: the hub, the asyncio loop in a greenlet, Tornado and
    # Twisted on that loop.
    fig.boxes += [
        Box(xs[1], 150, col_w, 62, "Tornado IOLoop", ("AsyncIOLoop",), kind="framework"),
        Box(
            xs[2], 150, col_w, 62, "Twisted reactor", ("AsyncioSelectorReactor",), kind="framework"
        ),
        Box(
            xs[0],
            250,
            xs[2] + col_w - xs[0],
            62,
            "One asyncio loop, in a greenlet",
            ("MixedLoop: a SelectorEventLoop whose HubSelector waits on the hub",),
            kind="framework",
        ),
        Box(
            xs[0],
            350,
            xs[3] + col_w - xs[0],
            62,
            "gevent's hub: the base, unpatched",
            ("it runs every greenlet: the asyncio loop's, each gevent task's, the caller's",),
            kind="framework",
            mono_lines=False,
        ),
    ]
    fig.arrows += [
        Arrow(xs[0] + col_w / 2, 106, xs[0] + col_w / 2, 250),
        Arrow(xs[1] + col_w / 2, 106, xs[1] + col_w / 2, 150),
        Arrow(xs[2] + col_w / 2, 106, xs[2] + col_w / 2, 150),
        Arrow(xs[3] + col_w / 2, 106, xs[3] + col_w / 2, 350),
        Arrow(xs[1] + col_w / 2, 212, xs[1] + col_w / 2, 250),
        Arrow(xs[2] + col_w / 2, 212, xs[2] + col_w / 2, 250),
        Arrow((xs[0] + xs[2] + col_w) / 2, 312, (xs[0] + xs[2] + col_w) / 2, 350),
    ]
    fig.notes += [
        Note(
            430,
            442,
            "Code in any session awaits futures and tasks of any other;"
            " the host owns every wake-up,",
            "middle",
        ),
        Note(
            430,
            460,
            "so a call_soon or set_result from another greenlet is seen at once,"
            " not at the next timer.",
            "middle",
        ),
    ]
    return fig


FIGURES = (layering, host_mode, mixed_mode)


def write_all(folder: Path) -> list[Path]:
    """Write every figure into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for make in FIGURES:
        fig = make()
        path = folder / f"{fig.name}.svg"
        path.write_text(render(fig), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "img"
    for path in write_all(target):
        print(f"wrote {path}")
