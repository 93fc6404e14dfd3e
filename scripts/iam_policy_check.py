#!/usr/bin/env python3
"""Least-privilege check of the IAM policies in CloudFormation templates.

    python3 scripts/iam_policy_check.py TEMPLATE...          # exit 1 on any violation
    python3 scripts/iam_policy_check.py --self-test TEMPLATE # proves the check catches bad copies

Run it on plain CloudFormation: infra/*.yaml, and template.yaml after the SAM transform
(scripts/sam_expand.py), so that policies SAM generates are checked too.

Rules, for every Allow statement of every policy (role inline policies, AWS::IAM::Policy /
ManagedPolicy / RolePolicy, trust policies and resource policies such as KMS key policies):

- no wildcard in an action ("*", "dynamodb:*", "kms:Get*"), no NotAction, no NotResource;
- no Resource "*" (nor an ARN whose resource part is "*"), except for actions that support
  no resource-level permission, listed in STAR_RESOURCE_ACTIONS;
- no AWS managed or customer managed policy attached to a role (their statements are not in
  the template, so they cannot be checked here);
- no Principal "*" in a trust or resource policy;
- every DynamoDB item write (PutItem, UpdateItem, DeleteItem, BatchWriteItem,
  ConditionCheckItem, PartiQL writes) in an identity policy carries a `dynamodb:LeadingKeys`
  condition under `ForAllValues:StringLike` or `ForAllValues:StringEquals`, listing partition
  keys that are not "*" alone: a role writes only the item kinds it owns
  (scripts/template_checks.py leading-keys checks which ones).

The one exception to the action rule is the default statement of a KMS key policy: the
account root gets "kms:*" on "*" (in a key policy "*" means the key itself). It grants no
principal anything by itself; it lets IAM policies in the account, checked here, decide.

Intrinsic functions are followed: Ref to a parameter takes its default, Fn::If yields both
branches, Fn::Sub / Fn::Join / Fn::Split are evaluated, so a parameter default of "*" fails.
"""

import copy
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile

# Actions AWS authorizes only against Resource "*" (no resource types in the Service
# Authorization Reference). Lowercase.
STAR_RESOURCE_ACTIONS = {
    # AWS X-Ray: Lambda active tracing sends segments with these.
    "xray:puttracesegments",
    "xray:puttelemetryrecords",
    # Service Quotas: listing quotas has no resource type (GetServiceQuota has one: quota).
    "servicequotas:listservicequotas",
}

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "vmx",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/vmx/id",
    "AWS::URLSuffix": "amazonaws.com",
}

IDENTITY_POLICY_TYPES = {
    "AWS::IAM::Policy": "PolicyDocument",
    "AWS::IAM::ManagedPolicy": "PolicyDocument",
    "AWS::IAM::RolePolicy": "PolicyDocument",
    "AWS::IAM::UserPolicy": "PolicyDocument",
    "AWS::IAM::GroupPolicy": "PolicyDocument",
}

RESOURCE_POLICY_TYPES = {
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy",
    "AWS::DynamoDB::ResourcePolicy": "PolicyDocument",
    "AWS::Lambda::LayerVersionPermission": None,
}

MAX_ALTERNATIVES = 256

# DynamoDB actions that write items, each authorized per item (a TransactWriteItems item by
# its Put/Update/Delete/ConditionCheck action). Lowercase.
DYNAMODB_WRITE_ACTIONS = {
    "dynamodb:putitem",
    "dynamodb:updateitem",
    "dynamodb:deleteitem",
    "dynamodb:batchwriteitem",
    "dynamodb:conditioncheckitem",
    "dynamodb:partiqlinsert",
    "dynamodb:partiqlupdate",
    "dynamodb:partiqldelete",
}

# The operators under which a LeadingKeys condition restricts every key of the request
# (ForAnyValue would allow a request if one key matched).
LEADING_KEYS_OPERATORS = ("forallvalues:stringlike", "forallvalues:stringequals")


def load(path):
    """Reads JSON or YAML with CloudFormation short tags (!Ref ...) as long-form dicts."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        pass
    from samcli.yamlhelper import yaml_parse  # noqa: PLC0415 (only needed for YAML)

    return yaml_parse(text)


class Resolver:
    """Evaluates intrinsic functions to every string they can produce."""

    def __init__(self, template):
        self.parameters = template.get("Parameters") or {}
        self.resources = template.get("Resources") or {}

    def ref(self, name):
        if name in PSEUDO:
            return [PSEUDO[name]]
        if name == "AWS::NoValue":
            return []
        param = self.parameters.get(name)
        if param is not None:
            default = param.get("Default")
            if default is None:
                return [f"<parameter {name}>"]
            if param.get("Type", "").startswith("CommaDelimitedList") or param.get(
                "Type", ""
            ).startswith("List<"):
                if isinstance(default, list):
                    return [str(d) for d in default]
                return [part.strip() for part in str(default).split(",")]
            return [str(default)]
        return [f"<ref {name}>"]

    def values(self, expr):
        """Every string leaf `expr` can evaluate to (a list of resources is its leaves)."""
        if expr is None:
            return []
        if isinstance(expr, bool):
            return [str(expr).lower()]
        if isinstance(expr, (str, int, float)):
            return [str(expr)]
        if isinstance(expr, list):
            out = []
            for item in expr:
                out.extend(self.values(item))
            return out
        if isinstance(expr, dict) and len(expr) == 1:
            (fn, arg), = expr.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::If":
                return self.values(arg[1]) + self.values(arg[2])
            if fn == "Fn::GetAtt":
                target = arg if isinstance(arg, str) else ".".join(map(str, arg))
                return [f"<getatt {target}>"]
            if fn == "Fn::Sub":
                return self.sub(arg)
            if fn == "Fn::Join":
                sep, parts = arg
                choices = [self.values(p) or [""] for p in (parts if isinstance(parts, list) else [parts])]
                return [sep.join(c) for c in itertools.islice(itertools.product(*choices), MAX_ALTERNATIVES)]
            if fn == "Fn::Split":
                sep, source = arg
                out = []
                for value in self.values(source):
                    out.extend(value.split(sep))
                return out
            if fn == "Fn::Select":
                return self.values(arg[1])
            if fn in ("Fn::ImportValue", "Fn::GetAZs", "Fn::Base64", "Fn::Cidr", "Fn::FindInMap"):
                return [f"<{fn}>"]
        return [f"<{json.dumps(expr, sort_keys=True)[:60]}>"]

    def sub(self, arg):
        if isinstance(arg, list):
            text, variables = arg[0], arg[1] or {}
        else:
            text, variables = arg, {}
        names = sorted(set(re.findall(r"\$\{([^}!]+)\}", text)))
        choices = []
        for name in names:
            if name in variables:
                choices.append(self.values(variables[name]) or [""])
            elif "." in name:
                choices.append([f"<getatt {name}>"])
            else:
                choices.append(self.ref(name) or [""])
        out = []
        for combo in itertools.islice(itertools.product(*choices), MAX_ALTERNATIVES):
            value = text
            for name, replacement in zip(names, combo):
                value = value.replace("${" + name + "}", replacement)
            out.append(value)
        return out


def statements(resolver, document):
    """The statements of a policy document, Fn::If branches included."""
    if document is None:
        return []
    if isinstance(document, dict) and "Fn::If" in document:
        _, a, b = document["Fn::If"]
        return statements(resolver, a) + statements(resolver, b)
    if not isinstance(document, dict):
        return []
    body = document.get("Statement", [])
    if isinstance(body, dict) and "Fn::If" not in body:
        body = [body]
    out = []
    for item in body if isinstance(body, list) else [body]:
        if isinstance(item, dict) and "Fn::If" in item:
            _, a, b = item["Fn::If"]
            for branch in (a, b):
                if isinstance(branch, dict) and branch != {"Ref": "AWS::NoValue"}:
                    out.append(branch)
        elif isinstance(item, dict):
            out.append(item)
    return out


def is_account_root(values):
    return bool(values) and all(re.fullmatch(r"arn:aws[a-z-]*:iam::[0-9]{12}:root", v) for v in values)


def check_statement(resolver, where, stmt, kind):
    """Returns the violations of one statement. kind: identity, trust, key, resource."""
    problems = []
    if stmt.get("Effect") != "Allow":
        return problems
    sid = stmt.get("Sid", "?")
    label = f"{where} statement {sid}"
    if "NotAction" in stmt:
        problems.append(f"{label}: NotAction in an Allow statement")
    if "NotResource" in stmt:
        problems.append(f"{label}: NotResource in an Allow statement")
    actions = [a.lower() for a in resolver.values(stmt.get("Action"))]
    principal = stmt.get("Principal")
    principals = []
    if principal == "*":
        principals = ["*"]
    elif isinstance(principal, dict):
        for value in principal.values():
            principals.extend(resolver.values(value))
    if kind in ("trust", "key", "resource") and "*" in principals:
        problems.append(f"{label}: Principal '*'")

    key_default = kind == "key" and actions == ["kms:*"] and is_account_root(
        resolver.values((principal or {}).get("AWS")) if isinstance(principal, dict) else []
    )
    for action in actions:
        if "*" in action and not key_default:
            problems.append(f"{label}: wildcard action '{action}'")

    if kind in ("trust",):
        return problems
    writes = sorted(a for a in actions if a in DYNAMODB_WRITE_ACTIONS)
    if kind == "identity" and writes:
        keys = leading_keys(resolver, stmt.get("Condition"))
        if not keys:
            problems.append(
                f"{label}: DynamoDB write ({', '.join(writes)}) without a dynamodb:LeadingKeys"
                " condition (ForAllValues:StringLike)"
            )
        elif any(k.strip("*") == "" for k in keys):
            problems.append(f"{label}: dynamodb:LeadingKeys allows every partition key ({keys})")
    resources = resolver.values(stmt.get("Resource"))
    for resource in resources:
        star = resource == "*" or re.fullmatch(r"arn:[^:]*:[^:]*:[^:]*:[^:]*:\*", resource)
        if not star:
            continue
        if kind == "key" and resource == "*":
            continue  # In a key policy, "*" is the key the policy is attached to.
        if actions and all(a in STAR_RESOURCE_ACTIONS for a in actions):
            continue
        others = sorted(a for a in actions if a not in STAR_RESOURCE_ACTIONS)
        problems.append(
            f"{label}: Resource '{resource}' for {', '.join(others) or 'no action'}"
            " (only actions without resource-level permissions may use it)"
        )
    return problems


def leading_keys(resolver, condition):
    """The partition keys a statement's condition allows, [] when it does not restrict them."""
    if not isinstance(condition, dict):
        return []
    out = []
    for operator, block in condition.items():
        if operator.lower() not in LEADING_KEYS_OPERATORS or not isinstance(block, dict):
            continue
        for key, value in block.items():
            if key.lower() == "dynamodb:leadingkeys":
                out.extend(resolver.values(value))
    return out


def check_template(path):
    template = load(path)
    resolver = Resolver(template)
    problems = []
    checked = 0
    for name, resource in (template.get("Resources") or {}).items():
        rtype = resource.get("Type", "")
        props = resource.get("Properties") or {}
        docs = []
        if rtype in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
            if rtype == "AWS::IAM::Role":
                docs.append(("trust", f"{name} trust policy", props.get("AssumeRolePolicyDocument")))
            for policy in resolver_list(props.get("Policies")):
                pname = policy.get("PolicyName", "?") if isinstance(policy, dict) else "?"
                doc = policy.get("PolicyDocument") if isinstance(policy, dict) else None
                docs.append(("identity", f"{name} policy {pname}", doc))
            for arn in resolver.values(props.get("ManagedPolicyArns")):
                problems.append(f"{path}: {name}: managed policy {arn} attached (not checkable)")
            if props.get("PermissionsBoundary") is not None:
                pass  # A boundary only narrows permissions.
        elif rtype in IDENTITY_POLICY_TYPES:
            docs.append(("identity", name, props.get(IDENTITY_POLICY_TYPES[rtype])))
        elif rtype in RESOURCE_POLICY_TYPES and RESOURCE_POLICY_TYPES[rtype]:
            kind = "key" if rtype == "AWS::KMS::Key" else "resource"
            docs.append((kind, f"{name} {RESOURCE_POLICY_TYPES[rtype]}", props.get(RESOURCE_POLICY_TYPES[rtype])))
        elif rtype == "AWS::Serverless::Function":
            # Unexpanded SAM: inline statements are checked; the transform adds the rest.
            for policy in resolver_list(props.get("Policies")):
                if isinstance(policy, dict) and "Statement" in policy:
                    docs.append(("identity", f"{name} Policies", policy))
                elif isinstance(policy, str):
                    problems.append(f"{path}: {name}: managed policy {policy} attached (not checkable)")
        for kind, where, doc in docs:
            for stmt in statements(resolver, doc):
                checked += 1
                problems.extend(f"{path}: {p}" for p in check_statement(resolver, where, stmt, kind))
    return problems, checked


def resolver_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def run_checks(paths):
    failed = False
    for path in paths:
        problems, checked = check_template(path)
        if problems:
            failed = True
            for p in problems:
                print(f"IAM VIOLATION {p}")
        else:
            print(f"iam_policy_check: {path}: {checked} policy statements, no violation")
    return 1 if failed else 0


def first_role(template):
    for name, resource in template["Resources"].items():
        if resource.get("Type") == "AWS::IAM::Role" and resource["Properties"].get("Policies"):
            return name, resource
    raise SystemExit("self-test: the template has no role with an inline policy")


def bad_copies(template):
    """(description, expected message fragment, mutated template) for each kind of mistake."""

    def with_statement(stmt):
        bad = copy.deepcopy(template)
        _, role = first_role(bad)
        role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(stmt)
        return bad

    table = {"Fn::GetAtt": ["Table", "Arn"]}
    yield "Action '*'", "wildcard action '*'", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "*", "Resource": table})
    yield "service wildcard", "wildcard action 'dynamodb:*'", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:*"], "Resource": table})
    yield "prefix wildcard", "wildcard action 'kms:get*'", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "kms:Get*", "Resource": table})
    yield "Resource '*'", "Resource '*' for dynamodb:getitem", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"})
    yield "Resource '*' behind Fn::If", "Resource '*' for sts:assumerole", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "sts:AssumeRole",
         "Resource": {"Fn::If": ["SomeCondition", table, "*"]}})
    yield "allow-listed action mixed with another", "Resource '*' for dynamodb:scan", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": ["xray:PutTraceSegments", "dynamodb:Scan"],
         "Resource": "*"})
    yield "service-wide ARN", "Resource 'arn:aws:dynamodb:*:*:*'", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "dynamodb:GetItem",
         "Resource": {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:*:*:*"}})
    yield "NotAction", "NotAction", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "NotAction": "iam:*", "Resource": table})

    yield "DynamoDB write without LeadingKeys", "without a dynamodb:LeadingKeys condition", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": table})
    yield "DynamoDB write with ForAnyValue LeadingKeys", "without a dynamodb:LeadingKeys condition", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": table,
         "Condition": {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["CAP#*"]}}})
    yield "DynamoDB write with LeadingKeys '*'", "dynamodb:LeadingKeys allows every partition key", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": table,
         "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["CONN", "*"]}}})
    yield "DynamoDB batch write without LeadingKeys", "without a dynamodb:LeadingKeys condition", with_statement(
        {"Sid": "Bad", "Effect": "Allow", "Action": "dynamodb:BatchWriteItem", "Resource": table,
         "Condition": {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk"]}}})

    bad = copy.deepcopy(template)
    _, role = first_role(bad)
    role["Properties"]["ManagedPolicyArns"] = ["arn:aws:iam::aws:policy/AdministratorAccess"]
    yield "managed policy", "managed policy arn:aws:iam::aws:policy/AdministratorAccess", bad

    bad = copy.deepcopy(template)
    params = bad.setdefault("Parameters", {})
    params["BadPattern"] = {"Type": "String", "Default": "*"}
    _, role = first_role(bad)
    role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Sid": "Bad", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": {"Ref": "BadPattern"}})
    yield "parameter default '*'", "Resource '*' for sts:assumerole", bad

    bad = copy.deepcopy(template)
    _, role = first_role(bad)
    role["Properties"]["AssumeRolePolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"})
    yield "trust policy Principal '*'", "Principal '*'", bad


def self_test(path):
    """Runs this script on the good template and on bad copies of it, as CI would."""
    template = load(path)
    me = os.path.abspath(__file__)
    failures = []
    good = subprocess.run([sys.executable, me, path], capture_output=True, text=True, check=False)
    if good.returncode != 0:
        failures.append(f"the template itself fails:\n{good.stdout}{good.stderr}")
    count = 0
    with tempfile.TemporaryDirectory(prefix="iam-self-test-") as tmp:
        for i, (what, expected, bad) in enumerate(bad_copies(template)):
            count += 1
            bad_path = os.path.join(tmp, f"bad-{i}.json")
            with open(bad_path, "w", encoding="utf-8") as f:
                json.dump(bad, f)
            run = subprocess.run([sys.executable, me, bad_path], capture_output=True, text=True, check=False)
            if run.returncode == 0:
                failures.append(f"{what}: the bad copy passed")
            elif expected not in run.stdout:
                failures.append(f"{what}: failed without naming it ({expected!r}):\n{run.stdout}{run.stderr}")
            else:
                print(f"self-test: {what}: rejected as expected")
    if failures:
        for f in failures:
            print(f"SELF-TEST FAILURE {f}")
        return 1
    print(f"iam_policy_check self-test: {count} bad copies of {path} rejected, the original passes")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "--self-test":
        return max(self_test(p) for p in argv[2:])
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    return run_checks(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
