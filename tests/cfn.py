"""The CloudFormation templates under packaging/cloudformation, read as data for tests.

A YAML loader that keeps CloudFormation's short-form tags as their long form (``!Ref x`` ->
``{"Ref": "x"}``, ``!GetAtt a.b`` -> ``{"Fn::GetAtt": "a.b"}``), and the EventBridge rules'
event patterns with the template's parameters filled in, as CloudFormation would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import yaml  # type: ignore[import-untyped]

TEMPLATES = Path(__file__).resolve().parent.parent / "packaging" / "cloudformation"


def _construct_tag(loader: Any, suffix: str, node: Any) -> Dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader: Any = type("CfnLoader", (yaml.SafeLoader,), {})
CfnLoader.add_multi_constructor("!", _construct_tag)


def template(name: str) -> Dict[str, Any]:
    """packaging/cloudformation/NAME as a dict (tags in their long form)."""
    loaded: Dict[str, Any] = yaml.load((TEMPLATES / name).read_text(), Loader=CfnLoader)  # noqa: S506
    return loaded


def event_rules(name: str) -> Dict[str, Dict[str, Any]]:
    """Logical id -> resource of every AWS::Events::Rule in the template."""
    resources = template(name)["Resources"]
    return {
        logical_id: resource
        for logical_id, resource in resources.items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Events::Rule"
    }


def resolve(node: Any, parameters: Mapping[str, Any]) -> Any:
    """``node`` with every ``{"Ref": PARAMETER}`` replaced by its value (lists stay lists)."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in parameters:
            return parameters[node["Ref"]]
        return {key: resolve(value, parameters) for key, value in node.items()}
    if isinstance(node, list):
        resolved: List[Any] = [resolve(item, parameters) for item in node]
        return resolved
    return node
