"""`rag-sft model list | promote vNNNN | rollback`: the model registry by hand, each change with
its reason recorded in the registry's history."""

from __future__ import annotations

import argparse
import sys

from rag_sft.io.registry.model_registry import ModelRegistry


def _registry() -> ModelRegistry:
    from rag_sft.resources import Warehouse

    return ModelRegistry(Warehouse().models_dir())


def format_versions(registry: ModelRegistry) -> str:
    current = registry.current()
    lines = [f"{'':2}{'version':8} {'status':11} {'dataset':8} {'factuality_error':>16} {'eval_loss':>9}  reason"]
    for entry in registry.versions():
        candidate = next((c for c in entry.get("ab", []) if c["model"] == "candidate"), None)
        rate = candidate["factuality_error"]["rate"] if candidate else None
        lines.append(
            f"{'*' if entry['version'] == current else ' ':2}{entry['version']:8} {entry['status']:11} "
            f"{entry.get('dataset_version') or '-':8} {'-' if rate is None else f'{rate:.3f}':>16} "
            f"{entry.get('eval_loss', '-')!s:>9}  {entry.get('reason', '')}"
        )
    lines.append(f"in use: {current or 'the base model'} (* above)")
    return "\n".join(lines)


def cmd_model(args: argparse.Namespace) -> int:
    registry = _registry()
    try:
        if args.action == "list":
            print(format_versions(registry))
        elif args.action == "promote":
            registry.get(args.version)
            registry.promote(args.version, f"by hand: {args.reason}")
            print(f"{args.version} is in use")
        else:
            rolled_back, restored = registry.rollback(f"rolled back by hand: {args.reason}")
            print(f"{rolled_back} rolled back; in use: {restored or 'the base model'}")
    except (KeyError, ValueError) as error:  # a RegistryError is a ValueError
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub) -> None:
    model = sub.add_parser("model", help="list model versions, promote one, or roll back the one in use")
    actions = model.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version with its status, A/B numbers and reason")
    promote = actions.add_parser("promote", help="put a version in use")
    promote.add_argument("version", help="vNNNN")
    promote.add_argument("--reason", required=True, help="why (recorded in the registry)")
    rollback = actions.add_parser("rollback", help="restore the version in use before the current one")
    rollback.add_argument("--reason", required=True, help="why (recorded in the registry)")
    model.set_defaults(func=cmd_model)
