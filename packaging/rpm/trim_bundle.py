"""Trim the RPM's bundled site-packages to what certpull runs (certpull.spec's %install calls it).

    python3 trim_bundle.py SITE_PACKAGES SERVICES_FILE

botocore ships the models of every AWS service (about 430, 26 MB installed, most of the RPM) and an
endpoints.json that, once loaded, holds 8 MiB of every agent's memory. certpull calls five services.
Nothing here patches code: only data files and whole packages that no certpull process imports go.

Steps:
  (1) read the services from SERVICES_FILE (packaging/rpm/botocore-services.txt); each must be a
      directory of botocore/data, so a typo fails the build, not the host;
  (2) remove every other service directory of botocore/data; its top-level files (endpoints,
      partitions, _retry, sdk-default-configuration) are botocore's own and stay;
  (3) rewrite endpoints.json with the endpoints of the kept services only (keyed by each model's
      endpointPrefix), every partition and region kept; rewrite each kept service model without
      its documentation strings (only botocore.docs reads them, for help(); a client holds its
      model for the life of the process: 0.4 MiB of every agent's memory), and remove its
      examples (also only botocore.docs's);
  (4) remove the packages no certpull process imports (REMOVED, with the reason of each);
  (5) make each trimmed distribution's RECORD list what is installed (new hashes for rewritten
      files), and drop the dist-info of distributions removed whole (REMOVED_DISTRIBUTIONS);
  (6) print the installed bytes before and after.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, List, Set, Tuple

# (relative path, why nothing certpull runs imports it)
REMOVED: Tuple[Tuple[str, str], ...] = (
    (
        "boto3/data",
        "boto3's resource models: only boto3.resource() reads them, certpull uses clients",
    ),
    (
        "cffi",
        "cffi's Python package builds bindings; cryptography needs only _cffi_backend at run time",
    ),
    ("pycparser", "C parser for cffi's build step (cffi.FFI.cdef); never imported at run time"),
)
# Distributions removed whole: the RPM does not declare them as bundled (certpull.spec's Provides).
REMOVED_DISTRIBUTIONS = ("pycparser",)


def read_services(path: Path) -> List[str]:
    """Service names of a services file: one per line, `#` comments, blank lines ignored."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def endpoint_prefix(service_dir: Path) -> str:
    """The endpointPrefix of the newest API version's model (endpoints.json is keyed by it)."""
    newest = sorted(p for p in service_dir.iterdir() if p.is_dir())[-1]
    for name, opener in (("service-2.json.gz", gzip.open), ("service-2.json", open)):
        model_path = newest / name
        if model_path.is_file():
            with opener(model_path, "rb") as handle:
                model = json.loads(handle.read().decode("utf-8"))
            return str(model["metadata"].get("endpointPrefix", service_dir.name))
    raise SystemExit(f"trim_bundle: no service-2 model in {newest}")


def trim_endpoints(endpoints_path: Path, prefixes: Set[str]) -> None:
    data = json.loads(endpoints_path.read_text(encoding="utf-8"))
    for partition in data["partitions"]:
        partition["services"] = {
            name: value for name, value in partition["services"].items() if name in prefixes
        }
    endpoints_path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


DOC_KEYS = ("documentation", "documentationUrl")
DOCS_ONLY_FILES = ("examples-1.json",)


def without_docs(node: Any) -> Any:
    """A model with every documentation string removed. Only string values go: a member that
    happens to be named "documentation" holds a shape reference (a dict) and stays."""
    if isinstance(node, dict):
        return {
            key: without_docs(value)
            for key, value in node.items()
            if not (key in DOC_KEYS and isinstance(value, str))
        }
    if isinstance(node, list):
        return [without_docs(value) for value in node]
    return node


def strip_model_docs(service_dir: Path) -> None:
    """Every API version's service-2 model without documentation; its examples removed."""
    for version in sorted(p for p in service_dir.iterdir() if p.is_dir()):
        for name in DOCS_ONLY_FILES:
            (version / name).unlink(missing_ok=True)
        packed, plain = version / "service-2.json.gz", version / "service-2.json"
        if packed.is_file():
            model = json.loads(gzip.decompress(packed.read_bytes()).decode("utf-8"))
            text = json.dumps(without_docs(model), separators=(",", ":")).encode("utf-8")
            packed.write_bytes(gzip.compress(text, mtime=0))
        elif plain.is_file():
            model = json.loads(plain.read_text(encoding="utf-8"))
            plain.write_text(json.dumps(without_docs(model), separators=(",", ":")), "utf-8")


def record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def rewrite_records(site: Path) -> None:
    """Each RECORD lists only files still installed; rewritten files get their new hash and size."""
    for record in sorted(site.glob("*.dist-info/RECORD")):
        rows = []
        for row in record.read_text(encoding="utf-8").splitlines():
            relative, _, rest = row.partition(",")
            path = site / relative
            if relative == str(record.relative_to(site)):
                rows.append(row)
            elif path.is_file():
                digest, _, size = rest.partition(",")
                changed = digest and (
                    int(size) != path.stat().st_size or record_hash(path) != digest
                )
                rows.append(
                    f"{relative},{record_hash(path)},{path.stat().st_size}" if changed else row
                )
        record.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def main(argv: List[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    site, services_file = Path(argv[1]), Path(argv[2])
    before = tree_bytes(site)
    data = site / "botocore" / "data"
    # (1)
    services = read_services(services_file)
    missing = [name for name in services if not (data / name).is_dir()]
    if missing or not services:
        raise SystemExit(f"trim_bundle: not in botocore/data: {missing or 'no services listed'}")
    # (2)
    removed_models = 0
    for entry in sorted(data.iterdir()):
        if entry.is_dir() and entry.name not in services:
            shutil.rmtree(entry)
            removed_models += 1
    # (3)
    trim_endpoints(data / "endpoints.json", {endpoint_prefix(data / name) for name in services})
    for name in services:
        strip_model_docs(data / name)
    # (4)
    for relative, _why in REMOVED:
        target = site / relative
        if not target.is_dir():
            raise SystemExit(f"trim_bundle: {relative} is not in the bundle: update REMOVED")
        shutil.rmtree(target)
    # (5)
    for dist in REMOVED_DISTRIBUTIONS:
        for info in site.glob(f"{dist}-*.dist-info"):
            shutil.rmtree(info)
    rewrite_records(site)
    # (6)
    after = tree_bytes(site)
    print(
        f"trim_bundle: kept {len(services)} botocore service models ({', '.join(services)}), "
        f"removed {removed_models}; removed {', '.join(r for r, _ in REMOVED)}; "
        f"site-packages {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
