"""`govstream prices show|import`: the price catalog the governor charges by.

`show` prints the catalog in force (GOVSTREAM_PRICES_PATH, else the built-in
one) in the catalog format; `import FILE` converts LiteLLM's
`model_prices_and_context_window.json` (USD per token) to that format, so a
catalog users already maintain becomes GOVSTREAM_PRICES_PATH.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from govstream.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prices", help="show or import the model price catalog")
    actions = parser.add_subparsers(dest="prices_command", metavar="ACTION")
    actions.required = True
    actions.add_parser("show", help="the catalog in force, as YAML").set_defaults(func=_show)
    imported = actions.add_parser(
        "import", help="a catalog from LiteLLM's model_prices_and_context_window.json"
    )
    imported.add_argument("file", type=Path, metavar="FILE.json", help="the LiteLLM price file")
    imported.add_argument(
        "--out", type=Path, metavar="FILE.yaml", help="write here (default: stdout)"
    )
    imported.add_argument(
        "--effective-from", metavar="YYYY-MM-DD", help="the date these prices apply from"
    )
    imported.set_defaults(func=_import)


def _yaml(catalog: dict[str, object]) -> str:
    import yaml

    return yaml.safe_dump(catalog, sort_keys=True, default_flow_style=False)


def _show(args: argparse.Namespace) -> int:
    from govstream.settings import governor_config, load

    print(_yaml(governor_config(load()).prices.to_mapping()), end="")
    return 0


def _import(args: argparse.Namespace) -> int:
    from projections.pricing import from_litellm

    path: Path = args.file
    since = None
    if args.effective_from is not None:
        try:
            since = date.fromisoformat(args.effective_from)
        except ValueError:
            raise UsageError(
                f"--effective-from {args.effective_from!r}: expected YYYY-MM-DD"
            ) from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected an object of model -> prices")
    try:
        table = from_litellm(data, effective_from=since)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    text = _yaml(table.to_mapping())
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {len(table)} models to {args.out}")
    return 0
