"""The RPM, the systemd unit and the CloudFormation templates, checked with the real tools.

The RPM is built once per session (tests/integration/conftest.py: packaging/build-rpm.sh, ~20 s)
and installed into scratch roots with Debian's rpm; the installed tree is run with a CPython 3.9, the interpreter it is built for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import certpull
from tests.cfn import template
from tests.rpm_build import LIB, launcher_argv, run, trim_bundle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "certpull.service"
SPEC = REPO / "packaging" / "rpm" / "certpull.spec"
RPMLINTRC = REPO / "packaging" / "rpm" / "certpull.rpmlintrc"
REQUIREMENTS = REPO / "packaging" / "rpm" / "requirements.txt"
MACROS_FALLBACK = REPO / "packaging" / "rpm" / "macros.fallback"
TEMPLATES = REPO / "packaging" / "cloudformation"
DEFAULT_CONFIG = REPO / "packaging" / "certpull.conf"
REMOVED_DISTRIBUTIONS = trim_bundle().REMOVED_DISTRIBUTIONS


def rpm_install(root: Path, package: Path, *extra: str) -> None:
    argv = ["rpm", "--root", str(root), "--nodeps", "--noscripts"]
    if "--force-debian" in run(["rpm", "--help"]).stdout:
        argv.append("--force-debian")  # Debian's rpm refuses to install otherwise
    result = run([*argv, *extra, str(package)])
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def package(rpm_package: Path) -> Path:
    return rpm_package


@pytest.fixture(scope="module")
def listed(package: Path) -> List[str]:
    result = run(["rpm", "-qpl", str(package)])
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def installed_root(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rpmroot")
    rpm_install(root, package, "-ivh")
    return root


def run_installed(python39: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The launcher's shebang names AL2023's python3 and its flags: run it the same way, on a 3.9.
    return run([*launcher_argv(python39, root), *args])


def query(package: Path, queryformat: str) -> str:
    result = run(["rpm", "-qp", "--qf", queryformat, str(package)])
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- the package --------------------------------------------------------------------------------


def test_default_config_exists_for_the_spec() -> None:
    # The spec installs packaging/certpull.conf as %config(noreplace) /etc/certpull/certpull.conf.
    assert DEFAULT_CONFIG.is_file()


@pytest.mark.parametrize(
    "path",
    [
        "/usr/bin/certpull",
        "/etc/certpull/certpull.conf",
        "/etc/certpull/conf.d",
        "/etc/pki/certpull",
        "/var/lib/certpull",
        "/usr/lib/systemd/system/certpull.service",
        "/usr/share/licenses/certpull/LICENSE",
        "/usr/share/doc/certpull/packaging.md",
        "/usr/share/doc/certpull/doctor.md",
        "/usr/share/doc/certpull/migration.md",
        f"{LIB}/agent/certpull/__init__.py",
        f"{LIB}/agent/certpull/cli.py",
        f"{LIB}/agent/certpull/__pycache__/cli.cpython-39.pyc",
        f"{LIB}/site-packages/boto3/__init__.py",
        f"{LIB}/site-packages/botocore/__pycache__/session.cpython-39.pyc",
        f"{LIB}/site-packages/cryptography/x509/verification.py",
        f"{LIB}/site-packages/watchdog/observers/inotify.py",
    ],
)
def test_package_lists_file(listed: List[str], path: str) -> None:
    assert path in listed


def test_package_ships_no_foreign_bytecode_or_scripts(listed: List[str]) -> None:
    foreign = [p for p in listed if p.endswith(".pyc") and ".cpython-39." not in p]
    assert foreign == []
    assert not [p for p in listed if p.startswith(f"{LIB}/site-packages/bin")]


@pytest.mark.parametrize(
    ("path", "mode", "flags"),
    [
        ("/etc/certpull/certpull.conf", "-rw-r--r--", "cn"),  # %config(noreplace)
        ("/var/lib/certpull", "drwx------", ""),
        ("/etc/pki/certpull", "drwxr-xr-x", ""),
        ("/usr/bin/certpull", "-rwxr-xr-x", ""),
    ],
)
def test_package_file_modes_and_flags(package: Path, path: str, mode: str, flags: str) -> None:
    rows = query(package, "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]")
    found = {}
    for row in rows.splitlines():
        parts = row.split(" ")
        # fflags is empty for plain files: "perms  path"
        found[parts[-1]] = (parts[0], parts[1] if len(parts) == 3 else "")
    assert found[path] == (mode, flags)


def test_package_metadata(package: Path) -> None:
    assert query(package, "%{VERSION}") == certpull.__version__
    assert query(package, "%{ARCH}") in ("x86_64", "aarch64")
    assert package.name.startswith(f"certpull-{certpull.__version__}-1")
    requires = query(package, "[%{REQUIRENAME} %{REQUIREFLAGS:depflags} %{REQUIREVERSION}\n]")
    assert "python(abi) = 3.9" in requires.splitlines()
    assert "python3-systemd" in query(package, "[%{RECOMMENDNAME}\n]").splitlines()


def test_package_scriptlets_manage_the_service(package: Path) -> None:
    scripts = run(["rpm", "-qp", "--scripts", str(package)]).stdout
    assert "preset certpull.service" in scripts
    assert "disable --now certpull.service" in scripts
    assert "try-restart certpull.service" in scripts


def test_bundled_provides_match_pinned_requirements() -> None:
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE))
    provides = dict(
        re.findall(
            r"^Provides:\s+bundled\(python3dist\(([^)]+)\)\) = (\S+)$", SPEC.read_text(), re.M
        )
    )
    # pycparser is pinned (cffi requires it) but trimmed from the package: not declared as bundled.
    assert provides == {
        name: version for name, version in pins.items() if name not in REMOVED_DISTRIBUTIONS
    }
    assert set(REMOVED_DISTRIBUTIONS) <= set(pins)


def test_rpmlint_is_clean_with_the_checked_in_filters(package: Path) -> None:
    result = run(["rpmlint", "-r", str(RPMLINTRC), str(package)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 errors, 0 warnings" in result.stdout


def test_fallback_macros_expand_to_valid_scriptlets() -> None:
    for macro, expected in [
        ("%{_unitdir}", "/usr/lib/systemd/system"),
        ("%{systemd_post certpull.service}", "preset certpull.service"),
        ("%{systemd_preun certpull.service}", "disable --now certpull.service"),
        ("%{systemd_postun_with_restart certpull.service}", "try-restart certpull.service"),
    ]:
        result = run(["rpm", "--load", str(MACROS_FALLBACK), "--eval", macro])
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
        assert run(["sh", "-n", "-c", result.stdout]).returncode == 0


# --- the installed tree -------------------------------------------------------------------------


def test_installed_version(installed_root: Path, python39: str) -> None:
    result = run_installed(python39, installed_root, "--version")
    assert result.returncode == 0, result.stderr
    assert certpull.__version__ in result.stdout + result.stderr


def test_installed_check_config_accepts_default_config(installed_root: Path, python39: str) -> None:
    config = installed_root / "etc/certpull/certpull.conf"
    result = run_installed(python39, installed_root, "-c", str(config), "check-config")
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_tree_runs_on_bundled_libraries(installed_root: Path, python39: str) -> None:
    lib = installed_root / LIB.lstrip("/")
    probe = (
        "import sys; sys.dont_write_bytecode = True\n"
        f"sys.path[0:0] = [{str(lib / 'agent')!r}, {str(lib / 'site-packages')!r}]\n"
        "import boto3, botocore, certpull, cryptography.x509.verification, watchdog.observers\n"
        "for m in (boto3, botocore, certpull, cryptography, watchdog): print(m.__file__)\n"
    )
    result = run([python39, "-I", "-c", probe])
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert line.startswith(str(lib)), line


def test_installed_bytecode_is_hash_checked_for_python39(
    installed_root: Path, python39: str
) -> None:
    # checked-hash pycs stay valid whatever mtimes rpm records; the service cannot write new ones.
    lib = installed_root / LIB.lstrip("/")
    pycs = [
        lib / "agent/certpull/__pycache__/cli.cpython-39.pyc",
        lib / "agent/certpull/__pycache__/cli.cpython-39.opt-2.pyc",
        lib / "site-packages/boto3/__pycache__/session.cpython-39.pyc",
        lib / "site-packages/botocore/__pycache__/session.cpython-39.opt-2.pyc",
    ]
    probe = (
        "import importlib.util, sys\n"
        "for p in sys.argv[1:]:\n"
        "    head = open(p, 'rb').read(8)\n"
        "    flags = int.from_bytes(head[4:8], 'little')\n"
        "    print(head[:4] == importlib.util.MAGIC_NUMBER and flags == 0b11)\n"
    )
    result = run([python39, "-I", "-c", probe, *map(str, pycs)])
    assert result.stdout.split() == ["True"] * len(pycs), result.stderr


def test_the_launcher_runs_optimized_bytecode_that_is_shipped_for_every_module(
    installed_root: Path, python39: str
) -> None:
    """The shebang's -OO reads *.opt-2.pyc: one missing would be compiled on every start (the
    service cannot write it), so each module must have one, and the launcher must load them."""
    lib = installed_root / LIB.lstrip("/")
    sources = [p for p in lib.rglob("*.py") if "__pycache__" not in p.parts]
    missing = [
        str(p.relative_to(lib))
        for p in sources
        if not (p.parent / "__pycache__" / f"{p.stem}.cpython-39.opt-2.pyc").is_file()
    ]
    assert sources and missing == []
    assert "-IOO" in launcher_argv(python39, installed_root)
    result = run([*launcher_argv(python39, installed_root, "-v"), "--version"])
    loaded = [line for line in result.stderr.splitlines() if "certpull/cli" in line]
    assert any("cli.cpython-39.opt-2.pyc matches" in line for line in loaded), loaded


def test_upgrade_over_itself_keeps_modified_config(package: Path, tmp_path: Path) -> None:
    rpm_install(tmp_path, package, "-ivh")
    config = tmp_path / "etc/certpull/certpull.conf"
    edited = config.read_text() + "\n; edited by the operator\n"
    config.write_text(edited)
    damaged = tmp_path / LIB.lstrip("/") / "agent/certpull/__init__.py"
    damaged.unlink()

    rpm_install(tmp_path, package, "-Uvh", "--replacepkgs")

    assert config.read_text() == edited
    assert damaged.is_file()  # the upgrade did reinstall the package's files
    assert not list(config.parent.glob("certpull.conf.rpm*"))


# --- the systemd unit ---------------------------------------------------------------------------


def unit_entries() -> List[Tuple[str, str, str]]:
    section, entries = "", []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def unit_values(section: str, key: str) -> List[str]:
    return [v for s, k, v in unit_entries() if (s, k) == (section, key)]


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify checks that)."""
    true = shutil.which("true")
    assert true
    copy = tmp_path / "certpull.service"
    copy.write_text(UNIT.read_text().replace("ExecStart=/usr/bin/certpull", f"ExecStart={true}"))
    return copy


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("Unit", "After", "network-online.target"),
        ("Unit", "Wants", "network-online.target"),
        ("Unit", "Before", "httpd.service"),
        ("Unit", "Before", "apache2.service"),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "ConfigurationDirectory", "pki/certpull"),
        ("Service", "ReadOnlyPaths", "/run /dev/shm"),
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        ("Service", "WatchdogSec", "60"),
        ("Service", "Restart", "on-failure"),
        ("Service", "ExecStart", "/usr/bin/certpull run"),
        ("Service", "StateDirectory", "certpull"),
        ("Service", "StateDirectoryMode", "0700"),
        ("Service", "RuntimeDirectory", "certpull"),
        ("Service", "RuntimeDirectoryMode", "0700"),
        ("Install", "WantedBy", "multi-user.target"),
    ],
)
def test_unit_declares(section: str, key: str, value: str) -> None:
    assert value in unit_values(section, key)


@pytest.mark.parametrize(
    ("key", "needed", "why"),
    [
        ("ReadWritePaths", "/etc/pki/certpull", "the live directory"),
        ("ReadWritePaths", "-/etc/pki/tls", "compat links, when that directory exists"),
        ("ReadWritePaths", "-/var/lib/node_exporter/textfile_collector", "the Prometheus textfile"),
        ("ReadWritePaths", "-/var/lib/amazon/ssm", "the SSM custom inventory file"),
        ("RestrictAddressFamilies", "AF_UNIX", "systemctl reload over systemd's socket; sd_notify"),
        ("RestrictAddressFamilies", "AF_INET", "AWS endpoints and the loopback TLS check"),
        ("RestrictAddressFamilies", "AF_INET6", "AWS endpoints over IPv6"),
        ("CapabilityBoundingSet", "CAP_CHOWN", "key_owner / key_group"),
        ("SystemCallFilter", "@chown", "key_owner / key_group"),
    ],
)
def test_unit_sandbox_still_allows(key: str, needed: str, why: str) -> None:
    words = " ".join(unit_values("Service", key)).split()
    assert needed in words, why


def test_unit_sandbox_does_not_block_reload() -> None:
    # systemctl needs systemd's socket and the reload runs httpd's own unit outside this sandbox:
    # no private network, no user namespace that would hide root from systemd.
    for key in ("PrivateNetwork", "PrivateUsers", "IPAddressDeny"):
        assert unit_values("Service", key) == [], key


def test_unit_verifies_clean(checkable_unit: Path) -> None:
    result = run(["systemd-analyze", "verify", str(checkable_unit)])
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_unit_security_exposure_is_at_most_2_5(checkable_unit: Path) -> None:
    result = run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=25", str(checkable_unit)]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= 2.5


# --- CloudFormation -----------------------------------------------------------------------------


def cfn_lint() -> str:
    for candidate in (Path(sys.executable).parent / "cfn-lint", REPO / ".venv/bin/cfn-lint"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("cfn-lint")
    assert found, "cfn-lint is not installed (pip install cfn-lint)"
    return found


def role_statements(resources: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {
        s["Sid"]: s
        for r in resources.values()
        if r.get("Type") == "AWS::IAM::RolePolicy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
    }


def test_cfn_lint_is_clean() -> None:
    result = run([cfn_lint(), *map(str, sorted(TEMPLATES.glob("*.yaml")))])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sid", "actions", "resource"),
    [
        (
            "ReadCertificateSecrets",
            ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
            {"Ref": "SecretArns"},
        ),
        ("DecryptThroughSecretsManager", "kms:Decrypt", {"Ref": "SecretKmsKeyArns"}),
        ("ReceiveThisHostsQueue", ["sqs:ReceiveMessage", "sqs:DeleteMessage"], None),
        ("AssumeCertificateReaderRoles", "sts:AssumeRole", {"Ref": "AssumeRoleArns"}),
    ],
)
def test_host_role_is_least_privilege(sid: str, actions: Any, resource: Any) -> None:
    statements = role_statements(template("host.yaml")["Resources"])
    statement = statements[sid]
    assert statement["Action"] == actions
    assert statement["Resource"] != "*"
    if resource is not None:
        assert statement["Resource"] == resource


def test_host_role_has_nothing_else() -> None:
    resources = template("host.yaml")["Resources"]
    role = resources["InstanceRole"]["Properties"]
    # the SSM agent's managed policy (the doorbell, inventory), and only when asked for
    condition, (ssm_policy,), none = role["ManagedPolicyArns"]["Fn::If"]
    assert template("host.yaml")["Conditions"][condition] == {
        "Fn::Equals": [{"Ref": "SsmManaged"}, "true"]
    }
    assert ssm_policy == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    }
    assert none == {"Ref": "AWS::NoValue"}
    assert "Policies" not in role
    assert set(role_statements(resources)) == {
        "ReadCertificateSecrets",
        "DecryptThroughSecretsManager",
        "ReceiveThisHostsQueue",
        "AssumeCertificateReaderRoles",
    }


def test_host_decrypt_is_limited_to_secrets_manager_and_the_secrets() -> None:
    condition = role_statements(template("host.yaml")["Resources"])["DecryptThroughSecretsManager"]
    equals = condition["Condition"]["StringEquals"]
    assert "secretsmanager.${Region}.amazonaws.com" in str(equals["kms:ViaService"])
    assert equals["kms:EncryptionContext:SecretARN"] == {"Ref": "SecretArns"}


def test_host_instances_carry_the_tags_the_doorbell_targets() -> None:
    data = template("host.yaml")["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    _, (spec,), _ = data["TagSpecifications"]["Fn::If"]
    fleet, wave = spec["Tags"]
    assert spec["ResourceType"] == "instance"
    assert fleet == {"Key": "certpull:fleet", "Value": {"Ref": "FleetTagValue"}}
    assert wave["Fn::If"][1] == {"Key": "certpull:wave", "Value": {"Ref": "WaveTagValue"}}
    runbook = str(template("doorbell.yaml")["Resources"])
    assert "tag:certpull:fleet" in runbook and "tag:certpull:wave" in runbook


def test_host_requires_imdsv2() -> None:
    data = template("host.yaml")["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1


def test_host_queue_accepts_only_the_fleet_topic() -> None:
    resources = template("host.yaml")["Resources"]
    (statement,) = resources["EventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "EventsTopicArn"}}}
    assert resources["EventsSubscription"]["Properties"]["RawMessageDelivery"] is True


def test_owner_rules_fan_out_to_one_topic() -> None:
    resources = template("secret-owner.yaml")["Resources"]
    label = resources["LabelRule"]["Properties"]
    assert label["EventPattern"]["detail-type"] == ["Secret Label Updated"]
    assert "Condition" not in resources["LabelRule"]  # the first choice is always there
    cloudtrail = resources["CloudTrailRule"]
    assert cloudtrail["Condition"] == "ForwardCloudTrail"
    assert (
        "UpdateSecretVersionStage"
        in cloudtrail["Properties"]["EventPattern"]["detail"]["eventName"]
    )
    for rule in (label, cloudtrail["Properties"]):
        assert rule["EventPattern"]["source"] == ["aws.secretsmanager"]
        assert rule["Targets"] == [{"Id": "fleet-topic", "Arn": {"Ref": "Topic"}}]
    publish = resources["TopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert publish["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Fn::GetAtt": "LabelRule.Arn"},
        {
            "Fn::If": [
                "ForwardCloudTrail",
                {"Fn::GetAtt": "CloudTrailRule.Arn"},
                {"Ref": "AWS::NoValue"},
            ]
        },
    ]
    topics = [
        r for r in resources.values() if isinstance(r, dict) and r["Type"] == "AWS::SNS::Topic"
    ]
    assert len(topics) == 1


def test_owner_key_policy_lets_consumers_decrypt_only_through_secrets_manager() -> None:
    resources = template("secret-owner.yaml")["Resources"]
    statements = resources["SecretsKey"]["Properties"]["KeyPolicy"]["Statement"]
    consumer = statements[1]["Fn::If"][1]
    assert consumer["Action"] == "kms:Decrypt"
    equals = consumer["Condition"]["StringEquals"]
    assert equals["kms:EncryptionContext:SecretARN"] == {"Ref": "SecretArns"}
    assert "secretsmanager.${AWS::Region}" in str(equals["kms:ViaService"])


def test_owner_resource_policy_grants_read_only() -> None:
    resources = template("secret-owner.yaml")["Resources"]
    _, collection, body = resources["Fn::ForEach::SecretPolicies"]
    assert collection == {"Ref": "SecretArns"}
    (policy,) = body.values()
    assert policy["Properties"]["BlockPublicPolicy"] is True
    (statement,) = policy["Properties"]["ResourcePolicy"]["Statement"]
    assert sorted(statement["Action"]) == [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
    ]


def test_rotation_function_takes_over_only_the_named_secrets() -> None:
    """AdoptSecretArns (docs/migration.md): the sample's secrets, their keys through Secrets
    Manager only, and the sample's template, each granted only when asked for."""
    resources = template("rotation.yaml")["Resources"]
    statements = resources["RotationRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    conditional = {
        s["Fn::If"][1]["Sid"]: (s["Fn::If"][0], s["Fn::If"][1])
        for s in statements["Statement"]
        if "Fn::If" in s
    }
    condition, rotate = conditional["RotateTheAdoptedSecrets"]
    assert condition == "AdoptsSecrets"
    assert rotate["Resource"] == {"Ref": "AdoptSecretArns"}
    assert "secretsmanager:PutSecretValue" in rotate["Action"]
    condition, keys = conditional["AdoptedSecretsKeysThroughSecretsManager"]
    assert condition == "AdoptsKmsKeys"
    assert keys["Resource"] == {"Ref": "AdoptSecretKmsKeyArns"}
    assert "secretsmanager." in str(keys["Condition"]["StringEquals"]["kms:ViaService"])
    _, issue = conditional["IssueFromTheCaWithTheTemplate"]
    assert issue["Condition"]["StringEquals"]["acm-pca:TemplateArn"] == [
        {"Ref": "TemplateArn"},
        {"Fn::If": ["AdoptsPcaSecrets", {"Ref": "AdoptTemplateArn"}, {"Ref": "AWS::NoValue"}]},
    ]
