"""Build the API reference of `tl_video` from its docstrings with pdoc: `python docs/api/build_api_docs.py [OUT]`.

Every module of the package is documented: pdoc's own walk follows a package's `__all__`, and our
packages' `__all__` name the public functions, not the submodules, so the modules are listed here
and rendered one by one (what `pdoc.pdoc` does, without its walk). Names a package exports lazily
(through a module `__getattr__`, e.g. `tl_video.data.generate_benchmark`) are resolved first, so
the page documents them.
Writes HTML into OUT (default `docs/api-build`; open `OUT/index.html`). Any warning pdoc raises
(an annotation it cannot resolve, a broken cross-reference, a module that fails to import) is
collected and printed, and makes the build exit with status 1: the test suite builds it this way.
"""

from __future__ import annotations

import html
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc.doc
import pdoc.render

PACKAGE = "tl_video"


def module_names() -> list[str]:
    """`tl_video` and every module below it, sorted."""
    import tl_video

    names = [PACKAGE] + [info.name for info in pkgutil.walk_packages(tl_video.__path__, prefix=f"{PACKAGE}.")]
    return sorted(names)


def _resolve_lazy_exports(module: object) -> None:
    """Set every name of `module.__all__` that only its `__getattr__` provides, so pdoc sees it."""
    for name in getattr(module, "__all__", ()):
        if name not in vars(module):
            setattr(module, name, getattr(module, name))


def _index(modules: dict[str, pdoc.doc.Module]) -> str:
    """A plain page linking every module with the first line of its docstring.

    (pdoc's own index redirects to the top package, whose page lists only the submodules in its
    `__all__`: none of ours.)
    """
    rows = "\n".join(
        f'<li><a href="{name.replace(".", "/")}.html"><code>{html.escape(name)}</code></a> — '
        f"{html.escape((module.docstring or '').strip().splitlines()[0] if module.docstring.strip() else '')}</li>"
        for name, module in modules.items()
    )
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{PACKAGE} API reference</title></head>\n"
            f"<body style='font-family: sans-serif; max-width: 60em; margin: 2em auto'>\n"
            f"<h1>{PACKAGE} API reference</h1>\n<p>Built from the docstrings with pdoc. Start at "
            f"<a href='{PACKAGE}.html'><code>{PACKAGE}</code></a>; every module:</p>\n<ul>\n{rows}\n</ul>\n</body></html>\n")


def build(out_dir: str | Path) -> list[str]:
    """Write the HTML reference into `out_dir`; return pdoc's warnings (empty when the build is clean)."""
    out = Path(out_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.render.configure(docformat="markdown", footer_text=f"{PACKAGE} API reference", search=True)
        names = module_names()
        for name in names:
            _resolve_lazy_exports(importlib.import_module(name))
        modules = {name: pdoc.doc.Module.from_name(name) for name in names}
        for name, module in modules.items():
            page = out / f"{name.replace('.', '/')}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(pdoc.render.html_module(module, modules), encoding="utf-8")
        (out / "index.html").write_text(_index(modules), encoding="utf-8")
        (out / "search.js").write_text(pdoc.render.search_index(modules), encoding="utf-8")
    return list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/api-build")
    problems = build(out)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"API reference: {out / 'index.html'} ({len(module_names())} modules, {len(problems)} warnings)")
    sys.exit(1 if problems else 0)
