#!/usr/bin/env python3
"""Checks that template.yaml agrees with the code it deploys.

    python3 scripts/template_checks.py functions TEMPLATE   # "<logical id> <code uri> <binary> <package>" lines
    python3 scripts/template_checks.py mirror TEMPLATE      # exit 1 on a disagreement

`mirror` checks:
- the DynamoDB table is exactly the schema of lib/vmx-aws/src/table.rs (key attributes,
  their types, billing mode, TTL attribute, no secondary index);
- every VMX_* environment variable the template sets is read somewhere in the Rust sources
  (a typo would otherwise be ignored silently: Config::from_env skips unknown names);
- every function's CodeUri is a crate whose bin target is the BuildProperties Binary;
- the admin API's IAM-authorized routes (AWS::ApiGatewayV2::Route resources) are exactly
  the Access::Admin routes of `vmx_api::route_table` (lib/vmx-api/src/lib.rs), so a new admin
  route cannot be forgotten in the template, nor a caller route exposed on the admin API;
  its public routes are exactly the console's pages, its JWT routes exactly the console's
  API prefix, and every route reaches the admin function.
A function whose crate directory does not exist yet only gets a loud warning.

    python3 scripts/template_checks.py leading-keys TEMPLATE   # exit 1 on a disagreement
    python3 scripts/template_checks.py metrics TEMPLATE        # also part of `mirror`

`metrics` checks that the CloudWatch dashboard and the metric alarms exist and name only the
namespace, metric names and dimension names that lib/vmx-api/src/metrics.rs emits (its
NAMESPACE, METRICS table and dimension constants), that the dashboard shows every metric an
operator needs, and that each alarm notifies the optional SNS topic under HasAlarmTopic.

`leading-keys` checks each function role's DynamoDB write conditions against the code:
- the partition keys come from lib/vmx-aws/src/table.rs (every `*_PK` / `*_PK_PREFIX`
  constant is an item kind; a new one fails until WRITES below says who writes it);
- WRITES says which item kinds each function writes, through which adapter module, with
  which actions (and, for a connection item written by inference and refresh, which
  attributes); each claim is checked against that module's source (it builds that key and
  makes that call), and every write call of an adapter module must be claimed by a function;
- each role's `dynamodb:LeadingKeys` patterns must allow exactly the kinds its function
  writes, nothing more: every pattern matches a sample key of its kind and of no other kind,
  and the role's write actions on each kind are those the function needs;
- then bad copies of the template (an extra kind, a missing one, an over-wide pattern) must
  fail, proving the check can.

    python3 scripts/template_checks.py edge TEMPLATE   # exit 1 on a disagreement

`edge` checks how inference is exposed:
- the inference REST API (the AWS::Serverless::Api or AWS::ApiGateway::RestApi whose
  integrations reach InferenceFunction) serves exactly the Access::Caller routes of
  `vmx_api::route_table`, each an `aws_proxy` integration with `responseTransferMode: STREAM`
  on the `.../2021-11-15/functions/${InferenceFunction.Arn}/response-streaming-invocations`
  URI, and exists only when InferenceEndpoint is ApiGateway;
- InferenceFunction has reserved concurrency: ReservedConcurrentExecutions is the
  InferenceReservedConcurrency parameter (alone or as the live branch of an Fn::If), whose
  default is above 0;
- the function URL exists only when InferenceEndpoint is FunctionUrl: no function has a
  FunctionUrlConfig, and every AWS::Lambda::Url and function-URL permission carries that
  condition;
- then bad copies of the template (a BUFFERED integration, the buffered invocations URI, a
  missing route, no reserved concurrency, an unconditional function URL) must fail.
"""

import copy
import fnmatch
import json

import os
import re
import sys

from samcli.yamlhelper import yaml_parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml_parse(f.read())


def functions(template):
    """(logical id, code uri, binary, resource) of every AWS::Serverless::Function."""
    out = []
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        meta = resource.get("Metadata", {})
        binary = (meta.get("BuildProperties") or {}).get("Binary")
        out.append((name, props.get("CodeUri"), binary, resource))
    return out


def rust_sources():
    for top in ("lib", "functions"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d not in ("target", "tests")]
            for f in filenames:
                if f.endswith(".rs"):
                    with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                        yield fh.read()


def table_schema_from_rust():
    with open(os.path.join(ROOT, "lib/vmx-aws/src/table.rs"), encoding="utf-8") as f:
        text = f.read()

    def const(name):
        m = re.search(rf'pub const {name}: &str = "([^"]+)";', text)
        if not m:
            raise SystemExit(f"table.rs: constant {name} not found")
        return m.group(1)

    m = re.search(r"pub fn create_table_request.*?\n}\n", text, re.S)
    if not m:
        raise SystemExit("table.rs: create_table_request not found")
    body = m.group(0)
    billing = re.findall(r"BillingMode::(\w+)", body)
    keys = re.findall(r"key\((\w+), KeyType::(\w+)\)", body)
    attrs = re.findall(r"string_attribute\((\w+)\)", body)
    consts = {"PK": const("PK"), "SK": const("SK")}
    camel = {"PayPerRequest": "PAY_PER_REQUEST", "Provisioned": "PROVISIONED"}
    return {
        "BillingMode": camel.get(billing[0], billing[0]) if billing else None,
        "AttributeDefinitions": sorted((consts[a], "S") for a in attrs),
        "KeySchema": sorted((consts[k], t.upper()) for k, t in keys),
        "TTL": const("TTL_ATTRIBUTE"),
        "HasIndexes": "global_secondary_indexes" in body or "local_secondary_indexes" in body,
    }


def check_table(template, problems):
    tables = [(n, r) for n, r in template["Resources"].items() if r.get("Type") == "AWS::DynamoDB::Table"]
    if len(tables) != 1:
        problems.append(f"expected exactly one AWS::DynamoDB::Table, found {len(tables)}")
        return
    name, table = tables[0]
    props = table.get("Properties", {})
    want = table_schema_from_rust()
    got = {
        "BillingMode": props.get("BillingMode"),
        "AttributeDefinitions": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in props.get("AttributeDefinitions", [])
        ),
        "KeySchema": sorted((k["AttributeName"], k["KeyType"]) for k in props.get("KeySchema", [])),
        "TTL": (props.get("TimeToLiveSpecification") or {}).get("AttributeName")
        if (props.get("TimeToLiveSpecification") or {}).get("Enabled") in (True, "true")
        else None,
        "HasIndexes": bool(props.get("GlobalSecondaryIndexes") or props.get("LocalSecondaryIndexes")),
    }
    for field, value in want.items():
        if got[field] != value:
            problems.append(f"table {name}: {field} is {got[field]!r}, table.rs says {value!r}")
    if not problems:
        print(f"template_checks: table {name} mirrors lib/vmx-aws/src/table.rs")


def env_vars(resource_env):
    variables = (resource_env or {}).get("Variables") or {}
    return set(variables)


def check_env(template, problems, warnings):
    source = "\n".join(rust_sources())
    read = set(re.findall(r'"(VMX_[A-Z0-9_]+)"', source))
    glob = env_vars(((template.get("Globals") or {}).get("Function") or {}).get("Environment"))
    exists = {name: os.path.isdir(os.path.join(ROOT, uri)) for name, uri, _, _ in functions(template)}
    for var in sorted(v for v in glob if v.startswith("VMX_")):
        if var not in read:
            problems.append(f"Globals sets {var}, which no Rust source reads")
    for name, _, _, resource in functions(template):
        own = env_vars(resource.get("Properties", {}).get("Environment"))
        for var in sorted(v for v in own if v.startswith("VMX_")):
            if var in read:
                continue
            msg = f"{name} sets {var}, which no Rust source reads"
            if exists[name]:
                problems.append(msg)
            else:
                warnings.append(msg + " (its crate does not exist yet)")
    print(f"template_checks: {len(glob | set().union(*[env_vars(r.get('Properties', {}).get('Environment')) for *_, r in functions(template)]))} environment variables checked against the Rust sources")


def crate_bins(cargo_toml):
    with open(cargo_toml, encoding="utf-8") as f:
        text = f.read()
    package = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
    bins = re.findall(r'^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
    return (package.group(1) if package else None), bins


def check_crates(template, problems, warnings):
    for name, uri, binary, _ in functions(template):
        path = os.path.join(ROOT, uri or "")
        if not os.path.isdir(path):
            warnings.append(f"{name}: CodeUri {uri} does not exist yet (binary {binary}): not built")
            continue
        cargo = os.path.join(path, "Cargo.toml")
        if not os.path.isfile(cargo):
            problems.append(f"{name}: {uri} has no Cargo.toml")
            continue
        package, bins = crate_bins(cargo)
        has_main = os.path.isfile(os.path.join(path, "src/main.rs"))
        available = bins or ([package] if has_main else [])
        if binary not in available:
            problems.append(f"{name}: Binary {binary!r} is not a bin target of {uri} ({available})")
        else:
            print(f"template_checks: {name}: crate {package}, bin {binary}")


def route_table():
    """(path, methods, access) of every route in vmx_api::route_table."""
    with open(os.path.join(ROOT, "lib/vmx-api/src/lib.rs"), encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r'route\(\s*"([^"]+)",\s*&\[([^\]]*)\],\s*Access::(\w+)', text)
    return [(path, re.findall(r'"(\w+)"', methods), access) for path, methods, access in found]


# Admin routes of route_table that only the local server serves: the admin API has no route
# to them (GET /metrics: in Lambda the metrics are CloudWatch EMF lines, see check_metrics).
LOCAL_ONLY_ADMIN_PATHS = {"/metrics"}

# The console's routes in the template, by authorization: public pages (the function answers
# them with the shell; Page/Public routes of route_table) and the Cognito-authorized API
# prefix, which the Lambda glue strips before routing to the admin routes.
CONSOLE_PAGE_ROUTES = {"GET /", "GET /console", "GET /console/{proxy+}"}
CONSOLE_API_ROUTES = {"ANY /console/api/{proxy+}"}
# route_table paths the public page routes stand for.
CONSOLE_TABLE_PATHS = {"/", "/console", "/console/", "/console/{*path}"}


def getatt_target(value):
    """The logical id an `integrations/${X}` target or a GetAtt X.Arn names."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        m = re.fullmatch(r"integrations/\$\{(\w+)\}", value["Fn::Sub"])
        return m.group(1) if m else None
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        att = value["Fn::GetAtt"]
        return (att[0] if isinstance(att, list) else att.split(".")[0])
    return None


def check_routes(template, problems):
    routes = route_table()
    if not routes:
        problems.append("lib/vmx-api/src/lib.rs: no route(...) entries found in route_table")
        return
    admin = {path for path, _, access in routes if access == "Admin"} - LOCAL_ONLY_ADMIN_PATHS
    table_paths = {path for path, _, _ in routes}
    for path in sorted(CONSOLE_TABLE_PATHS - table_paths):
        problems.append(f"console route {path} is missing from route_table")
    resources = template.get("Resources", {})
    # Every route of every ApiGatewayV2 API: (route key, authorization, the function it reaches).
    iam, public, jwt = {}, set(), set()
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::ApiGatewayV2::Route":
            continue
        props = resource.get("Properties", {})
        key = props.get("RouteKey", "")
        auth = props.get("AuthorizationType", "NONE")
        integration = resources.get(getatt_target(props.get("Target")) or "", {})
        function = getatt_target(integration.get("Properties", {}).get("IntegrationUri"))
        if function != "ConnectionsFunction":
            problems.append(f"route {key} ({name}) is served by {function}, not ConnectionsFunction")
        if auth == "AWS_IAM":
            method, _, path = key.partition(" ")
            if method != "ANY":
                problems.append(f"IAM route {key} ({name}) should take ANY method")
            iam[path] = name
        elif auth == "JWT":
            jwt.add(key)
        else:
            public.add(key)
    for name, resource in resources.items():
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") == "HttpApi":
                problems.append(f"{name} has an HttpApi event: admin routes are ApiGatewayV2::Route resources")
    for path in sorted(admin - set(iam)):
        problems.append(f"admin route {path} (route_table) has no IAM route in the template")
    for path in sorted(set(iam) - admin):
        problems.append(f"IAM route {path} is not an Access::Admin route of route_table")
    if public != CONSOLE_PAGE_ROUTES:
        problems.append(f"public routes {sorted(public)} are not exactly the console pages {sorted(CONSOLE_PAGE_ROUTES)}")
    if jwt != CONSOLE_API_ROUTES:
        problems.append(f"JWT routes {sorted(jwt)} are not exactly {sorted(CONSOLE_API_ROUTES)}")
    if not problems:
        print(
            f"template_checks: the admin API serves exactly the {len(admin)} admin routes of route_table (IAM), "
            f"the {len(public)} console page routes (public) and the console API prefix (JWT)"
        )


# What each function writes, by the code it runs (functions/vmx-lambda::AwsAdapters and the
# vmx_api services behind its routes): (table.rs partition-key constant, adapter module of
# lib/vmx-aws/src, actions, attributes or None for any). Reads are table-wide and not listed.
WRITES = {
    # Admin routes: ConnectionStore (create: Put of connection and name claim; patch:
    # Update of the connection, Put/Delete of name claims on a rename; delete), the
    # discovered limits a connection test sees (Update of `disc`, and of their history
    # items DISCH#...), ApiKeyStore (insert: Put;
    # revoke: Update; delete: Delete; of the listing and by-hash items), and
    # CapacityLedger::bump_config_version (Update of the counter item's `cv`).
    "ConnectionsFunction": [
        ("CONN_PK", "dynamo_store", {"PutItem", "UpdateItem", "DeleteItem"}, None),
        ("NAME_PK_PREFIX", "dynamo_store", {"PutItem", "DeleteItem"}, None),
        ("API_KEYS_PK", "dynamo_api_keys", {"PutItem", "UpdateItem", "DeleteItem"}, None),
        ("API_KEY_PK_PREFIX", "dynamo_api_keys", {"PutItem", "UpdateItem", "DeleteItem"}, None),
        ("DISCH_PK_PREFIX", "dynamo_store", {"UpdateItem"}, None),
        # PUT /v1/prioritization: the pool definition (Put).
        ("PRIO_PK", "dynamo_prioritization", {"PutItem"}, None),
        ("CAP_PK_PREFIX", "dynamo_ledger", {"UpdateItem"}, {"ATTR_CONFIG_VERSION"}),
    ],
    # Caller routes: CapacityLedger admit/adjust (Update, or a transaction of Updates),
    # UsageStore::record (Update), DiscoveredCapacityStore::record_discovered (Update of the
    # connection item's `disc` and `dv`), ApiKeyStore::mark_used (a transaction of Updates
    # of the key's `lastUsedAt`).
    "InferenceFunction": [
        ("CAP_PK_PREFIX", "dynamo_ledger", {"UpdateItem"}, None),
        ("USAGE_PK_PREFIX", "dynamo_usage", {"UpdateItem"}, None),
        ("CONN_PK", "dynamo_store", {"UpdateItem"}, {"ATTR_DISC", "ATTR_DV"}),
        ("API_KEYS_PK", "dynamo_api_keys", {"UpdateItem"}, {"ATTR_LAST_USED"}),
        ("API_KEY_PK_PREFIX", "dynamo_api_keys", {"UpdateItem"}, {"ATTR_LAST_USED"}),
        ("DISCH_PK_PREFIX", "dynamo_store", {"UpdateItem"}, None),
    ],
    # Limit refresh: CapacityLedger::sweep (Update), RefreshCursor save (Put) and reset
    # (Delete), record_discovered (Update of `disc` and `dv`).
    "RefreshFunction": [
        ("CAP_PK_PREFIX", "dynamo_ledger", {"UpdateItem"}, None),
        ("REFRESH_PK", "refresh_cursor", {"PutItem", "DeleteItem"}, None),
        ("CONN_PK", "dynamo_store", {"UpdateItem"}, {"ATTR_DISC", "ATTR_DV"}),
        ("DISCH_PK_PREFIX", "dynamo_store", {"UpdateItem"}, None),
    ],
}

# How an adapter module makes each write: the SDK call, alone or as a transaction item.
WRITE_CALLS = {
    "PutItem": (r"\.put_item\(\)", r"\bPut::builder\(\)"),
    "UpdateItem": (r"\.update_item\(\)", r"\bUpdate::builder\(\)"),
    "DeleteItem": (r"\.delete_item\(\)", r"\bDelete::builder\(\)"),
    "ConditionCheckItem": (r"\bConditionCheck::builder\(\)",),
    "BatchWriteItem": (r"\.batch_write_item\(\)",),
}


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def item_kinds():
    """{constant: (partition key pattern, sample key, key function or None)} from table.rs."""
    text = read("lib/vmx-aws/src/table.rs")
    kinds = {}
    for name, value in re.findall(r'pub const (\w+_PK(?:_PREFIX)?): &str = "([^"]+)";', text):
        prefix = name.endswith("_PREFIX")
        kinds[name] = (value + "*" if prefix else value, value + "x1" if prefix else value, None)
    for fn, const in re.findall(r'pub fn (\w+)\([^)]*\) -> String \{\s*format!\("\{(\w+)\}', text):
        if const in kinds:
            pattern, sample, _ = kinds[const]
            kinds[const] = (pattern, sample, fn)
    return kinds


def module_source(module):
    """The module's code without its `#[cfg(test)]` parts: `<module>.rs`, or every file of
    the folder module `<module>/` (tests.rs left out)."""
    single = os.path.join(ROOT, "lib/vmx-aws/src", f"{module}.rs")
    if os.path.isfile(single):
        files = [f"lib/vmx-aws/src/{module}.rs"]
    else:
        folder = os.path.join(ROOT, "lib/vmx-aws/src", module)
        files = sorted(
            f"lib/vmx-aws/src/{module}/{name}"
            for name in os.listdir(folder)
            if name.endswith(".rs") and name != "tests.rs"
        )
    return "\n".join(read(f).split("#[cfg(test)]")[0] for f in files)


def role_of(template, function):
    props = template["Resources"][function]["Properties"]
    target = getatt_target(props.get("Role"))
    if not target:
        raise SystemExit(f"{function}: Role is not !GetAtt <role>.Arn")
    return target


def write_grants(template, role):
    """[(actions, LeadingKeys patterns, Attributes or None)] of the role's DynamoDB writes."""
    out = []
    for policy in template["Resources"][role]["Properties"].get("Policies", []):
        for stmt in policy["PolicyDocument"]["Statement"]:
            if stmt.get("Effect") != "Allow":
                continue
            actions = stmt.get("Action")
            actions = actions if isinstance(actions, list) else [actions]
            writes = {a.split(":", 1)[1] for a in actions if a.lower().startswith("dynamodb:")}
            writes &= set(WRITE_CALLS) | {"PartiQLInsert", "PartiQLUpdate", "PartiQLDelete"}
            if not writes:
                continue
            keys, attributes = [], None
            for operator, block in (stmt.get("Condition") or {}).items():
                if operator.lower().startswith("forallvalues:"):
                    keys += block.get("dynamodb:LeadingKeys", [])
                    if "dynamodb:Attributes" in block:
                        attributes = set(block["dynamodb:Attributes"])
            out.append((writes, keys, attributes))
    return out


def check_leading_keys(template, problems):
    kinds = item_kinds()
    pk_attr = re.search(r'pub const PK: &str = "([^"]+)";', read("lib/vmx-aws/src/table.rs")).group(1)
    sk_attr = re.search(r'pub const SK: &str = "([^"]+)";', read("lib/vmx-aws/src/table.rs")).group(1)
    # The item kinds of table.rs (ARCHITECTURE.md, "DynamoDB table"), each written by a
    # function below.
    known = {"CONN_PK", "NAME_PK_PREFIX", "CAP_PK_PREFIX", "API_KEYS_PK", "API_KEY_PK_PREFIX",
             "USAGE_PK_PREFIX", "REFRESH_PK", "DISCH_PK_PREFIX", "PRIO_PK"}
    claimed = {k for writes in WRITES.values() for k, *_ in writes}
    for kind in sorted(known - claimed):
        problems.append(f"WRITES: no function writes {kind}")
    for kind in sorted(set(kinds) - known):
        problems.append(f"table.rs has a new item kind {kind}: say in WRITES which function writes it")
    for kind in sorted(known - set(kinds)):
        problems.append(f"table.rs no longer has {kind}: update WRITES")

    # Each claim against the module's code.
    module_calls = {}
    for function, writes in WRITES.items():
        for kind, module, actions, attributes in writes:
            if kind not in kinds:
                continue
            src = module_source(module)
            _, _, key_fn = kinds[kind]
            if not re.search(rf"\b{kind}\b", src) and not (key_fn and re.search(rf"\b{key_fn}\(", src)):
                problems.append(f"{function}: {module}.rs builds no {kind} key (WRITES is stale)")
            for action in actions:
                if not any(re.search(p, src) for p in WRITE_CALLS[action]):
                    problems.append(f"{function}: {module}.rs makes no {action} (WRITES is stale)")
                module_calls.setdefault(module, set()).add(action)
            for attr in attributes or ():
                if not re.search(rf'const {attr}: &str = "[^"]+";', src):
                    problems.append(f"{function}: {module}.rs has no {attr}")
    # Every write call of an adapter module is claimed.
    for module in ("dynamo_store", "dynamo_ledger", "dynamo_api_keys", "dynamo_usage", "refresh_cursor"):
        src = module_source(module)
        for action, patterns in WRITE_CALLS.items():
            if any(re.search(p, src) for p in patterns) and action not in module_calls.get(module, set()):
                problems.append(f"{module}.rs makes {action}s no function claims in WRITES")

    samples = {kind: sample for kind, (_, sample, _) in kinds.items()}
    for function, writes in WRITES.items():
        role = role_of(template, function)
        grants = write_grants(template, role)
        need = {kind: (actions, attributes) for kind, _, actions, attributes in writes if kind in kinds}
        allowed = {}  # kind -> (actions, attributes of the grant or None)
        for actions, patterns, attributes in grants:
            if not patterns:
                problems.append(f"{role}: {sorted(actions)} without dynamodb:LeadingKeys: every item kind")
            for pattern in patterns:
                matched = [k for k, sample in samples.items() if fnmatch.fnmatchcase(sample, pattern)]
                if len(matched) != 1:
                    problems.append(
                        f"{role}: LeadingKeys pattern {pattern!r} matches {matched or 'no item kind'}"
                        " (each pattern must match exactly one item kind of table.rs)")
                    continue
                kind = matched[0]
                if pattern != kinds[kind][0]:
                    problems.append(f"{role}: LeadingKeys {pattern!r} for {kind}: expected {kinds[kind][0]!r}")
                acts, attrs = allowed.get(kind, (set(), set()))
                allowed[kind] = (acts | actions, None if attributes is None or attrs is None else attrs | attributes)
        for kind in sorted(set(allowed) - set(need)):
            problems.append(f"{role}: may write {kind} ({kinds[kind][0]}), which {function} never writes")
        for kind in sorted(set(need) - set(allowed)):
            problems.append(f"{role}: may not write {kind} ({kinds[kind][0]}), which {function} writes")
        for kind in sorted(set(need) & set(allowed)):
            actions, attributes = need[kind]
            granted, granted_attrs = allowed[kind]
            if actions - granted:
                problems.append(f"{role}: {kind}: missing {sorted(actions - granted)}")
            if attributes is None:
                continue
            src = module_source(next(m for k, m, *_ in WRITES[function] if k == kind))
            names = {re.search(rf'const {a}: &str = "([^"]+)";', src).group(1)
                     for a in attributes if re.search(rf'const {a}: &str = "([^"]+)";', src)}
            want = names | {pk_attr, sk_attr}
            if granted_attrs != want:
                problems.append(f"{role}: {kind}: dynamodb:Attributes {sorted(granted_attrs or []) or 'unrestricted'},"
                                f" expected exactly {sorted(want)}")
        needed_actions = set().union(*(a for a, _ in need.values())) if need else set()
        granted_actions = set().union(*(a for a, _, _ in grants)) if grants else set()
        if granted_actions - needed_actions:
            problems.append(f"{role}: grants {sorted(granted_actions - needed_actions)}, which {function} never makes")


def leading_keys_bad_copies(template):
    """(description, mutated template) that check_leading_keys must reject."""
    def statement(t, role, sid):
        for policy in t["Resources"][role]["Properties"]["Policies"]:
            for stmt in policy["PolicyDocument"]["Statement"]:
                if stmt.get("Sid") == sid:
                    return stmt
        raise SystemExit(f"self-test: {role} has no statement {sid}")

    def cond(stmt):
        return stmt["Condition"]["ForAllValues:StringLike"]

    bad = copy.deepcopy(template)
    cond(statement(bad, "InferenceRole", "TableWriteCountersAndUsage"))["dynamodb:LeadingKeys"].append("APIKEY#*")
    yield "inference may write API keys", bad
    bad = copy.deepcopy(template)
    cond(statement(bad, "InferenceRole", "TableWriteCountersAndUsage"))["dynamodb:LeadingKeys"].remove("USAGE#*")
    yield "inference may not write usage", bad
    bad = copy.deepcopy(template)
    keys = cond(statement(bad, "ConnectionsRole", "TableWriteAdminItems"))["dynamodb:LeadingKeys"]
    keys[keys.index("APIKEY#*")] = "APIKEY*"
    yield "a pattern that also matches APIKEYS", bad
    bad = copy.deepcopy(template)
    del cond(statement(bad, "RefreshRole", "TableWriteDiscoveredCapacity"))["dynamodb:Attributes"]
    yield "refresh may rewrite a whole connection", bad
    bad = copy.deepcopy(template)
    statement(bad, "InferenceRole", "TableWriteCountersAndUsage")["Action"] = ["dynamodb:UpdateItem", "dynamodb:PutItem"]
    yield "inference may put items", bad


# ---------------------------------------------------------------- edge (how inference is exposed)

INFERENCE_FUNCTION = "InferenceFunction"
STREAM_URI = (
    "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2021-11-15/functions/"
    "${InferenceFunction.Arn}/response-streaming-invocations"
)
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "x-amazon-apigateway-any-method"}


def condition_is(template, name, parameter, value):
    """Whether condition `name` is exactly `!Equals [!Ref parameter, value]`."""
    cond = (template.get("Conditions") or {}).get(name)
    if not isinstance(cond, dict) or "Fn::Equals" not in cond:
        return False
    a, b = cond["Fn::Equals"]
    return {"Ref": parameter} in (a, b) and value in (a, b)


def sub_text(value):
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return value if isinstance(value, str) else None


def rest_apis(template):
    """(logical id, resource, OpenAPI body) of every REST API definition in the template."""
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Api":
            yield name, resource, props.get("DefinitionBody") or {}
        elif resource.get("Type") == "AWS::ApiGateway::RestApi":
            yield name, resource, props.get("Body") or {}


def check_edge(template, problems):
    resources = template.get("Resources", {})
    params = template.get("Parameters", {})
    caller = {path for path, _, access in route_table() if access == "Caller"}
    if not caller:
        problems.append("route_table has no Access::Caller route")
    # The REST API(s) reaching the inference function.
    served = {}
    for name, resource, body in rest_apis(template):
        reaches = False
        for path, item in (body.get("paths") or {}).items():
            for method, op in (item or {}).items():
                if method.lower() not in HTTP_METHODS:
                    continue
                integration = (op or {}).get("x-amazon-apigateway-integration") or {}
                uri = sub_text(integration.get("uri")) or ""
                if "${" + INFERENCE_FUNCTION + ".Arn}" not in uri and INFERENCE_FUNCTION not in uri:
                    continue
                reaches = True
                label = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                where = f"{name} {label} {path}"
                served.setdefault(path, []).append(where)
                if integration.get("type") != "aws_proxy":
                    problems.append(f"{where}: integration type {integration.get('type')!r}, expected aws_proxy")
                if integration.get("responseTransferMode") != "STREAM":
                    problems.append(f"{where}: responseTransferMode {integration.get('responseTransferMode')!r}, expected STREAM")
                if uri != STREAM_URI:
                    problems.append(f"{where}: uri {uri!r} is not the response-streaming URI {STREAM_URI!r}")
        if reaches and not condition_is(template, resource.get("Condition", ""), "InferenceEndpoint", "ApiGateway"):
            problems.append(f"{name}: the inference REST API must exist only when InferenceEndpoint is ApiGateway")
    for path in sorted(caller - set(served)):
        problems.append(f"caller route {path} (route_table) has no STREAM integration on the inference REST API")
    for path in sorted(set(served) - caller):
        problems.append(f"inference REST API path {path} is not an Access::Caller route of route_table")
    for path, where in sorted(served.items()):
        if len(where) != 1:
            problems.append(f"{path} is served more than once: {where}")

    # Reserved concurrency.
    fn = resources.get(INFERENCE_FUNCTION, {}).get("Properties", {})
    rce = fn.get("ReservedConcurrentExecutions")
    ref = {"Ref": "InferenceReservedConcurrency"}
    if isinstance(rce, dict) and "Fn::If" in rce:
        live = rce["Fn::If"][1]
    else:
        live = rce
    if live != ref:
        problems.append(f"{INFERENCE_FUNCTION}: ReservedConcurrentExecutions is {rce!r}, expected the InferenceReservedConcurrency parameter")
    default = (params.get("InferenceReservedConcurrency") or {}).get("Default")
    try:
        reserved = int(default)
    except (TypeError, ValueError):
        reserved = 0
    if reserved <= 0:
        problems.append(f"InferenceReservedConcurrency defaults to {default!r}: inference must be reserved by default")

    # The function URL only under InferenceEndpoint=FunctionUrl.
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and "FunctionUrlConfig" in props:
            problems.append(f"{name}: FunctionUrlConfig creates a function URL whatever InferenceEndpoint says")
        public_url = resource.get("Type") == "AWS::Lambda::Url" or (
            resource.get("Type") == "AWS::Lambda::Permission" and props.get("Action") == "lambda:InvokeFunctionUrl")
        if public_url and not condition_is(template, resource.get("Condition", ""), "InferenceEndpoint", "FunctionUrl"):
            problems.append(f"{name}: a function URL (or its permission) must exist only when InferenceEndpoint is FunctionUrl")
    if not problems:
        print(f"template_checks: the inference REST API streams exactly the {len(caller)} caller routes of route_table; "
              f"{INFERENCE_FUNCTION} reserves {reserved} by default; the function URL exists only under InferenceEndpoint=FunctionUrl")


def edge_bad_copies(template):
    """(description, mutated template) that check_edge must reject."""
    def integrations(t):
        for _, _, body in rest_apis(t):
            for item in (body.get("paths") or {}).values():
                for op in item.values():
                    if isinstance(op, dict) and "x-amazon-apigateway-integration" in op:
                        yield op["x-amazon-apigateway-integration"]

    bad = copy.deepcopy(template)
    next(integrations(bad))["responseTransferMode"] = "BUFFERED"
    yield "a buffered integration", bad
    bad = copy.deepcopy(template)
    next(integrations(bad))["uri"] = {"Fn::Sub": STREAM_URI.replace("2021-11-15", "2015-03-31").replace("response-streaming-invocations", "invocations")}
    yield "the buffered invocations URI", bad
    bad = copy.deepcopy(template)
    for _, _, body in rest_apis(bad):
        if "/v1/models" in (body.get("paths") or {}):
            del body["paths"]["/v1/models"]
    yield "a caller route left out", bad
    bad = copy.deepcopy(template)
    del bad["Resources"][INFERENCE_FUNCTION]["Properties"]["ReservedConcurrentExecutions"]
    yield "no reserved concurrency", bad
    bad = copy.deepcopy(template)
    bad["Parameters"]["InferenceReservedConcurrency"]["Default"] = 0
    yield "unreserved by default", bad
    bad = copy.deepcopy(template)
    for resource in bad["Resources"].values():
        if resource.get("Type") == "AWS::Lambda::Url":
            resource.pop("Condition", None)
    yield "a function URL whatever InferenceEndpoint says", bad
    bad = copy.deepcopy(template)
    bad["Resources"][INFERENCE_FUNCTION]["Properties"]["FunctionUrlConfig"] = {"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM"}
    yield "a FunctionUrlConfig on the function", bad


def run_edge(path):
    template = load(path)
    problems = []
    check_edge(template, problems)
    for p in problems:
        print(f"MISMATCH {p}")
    if problems:
        return 1
    failed = False
    for what, bad in edge_bad_copies(template):
        found = []
        check_edge(bad, found)
        if found:
            print(f"self-test: {what}: rejected ({found[0]})")
        else:
            print(f"SELF-TEST FAILURE {what}: the bad copy passed")
            failed = True
    return 1 if failed else 0
# ---------------------------------------------------------------- metrics (issue 19)
# The dashboard and the alarms over the functions' EMF metrics must name only what
# lib/vmx-api/src/metrics.rs emits: its namespace, metric names and dimension names.
METRICS_RS = "lib/vmx-api/src/metrics.rs"
# The alarms that must exist, with the metric names each must read.
METRIC_ALARMS = {
    "ProviderErrorRateAlarm": {"errors", "requests"},
    "ThrottleRateAlarm": {"throttled", "requests"},
    "UtilizationAlarm": {"utilization_percent"},
    "BackingServiceErrorsAlarm": {"errors"},
}
# The metrics the dashboard must show.
DASHBOARD_METRICS = {
    "utilization_percent", "throttled", "errors", "latency_ms", "prompt_tokens",
    "completion_tokens", "requests",
}


def metrics_from_rust():
    """(namespace, metric names, dimension names) as lib/vmx-api/src/metrics.rs declares them."""
    text = read(METRICS_RS)
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', text))
    table = re.search(r"pub const METRICS: \[\(&str, &str\); \d+\] = \[(.*?)\];", text, re.S)
    names = {consts[c] for c in re.findall(r"\((\w+), \"\w+\"\)", table.group(1))} if table else set()
    dims = {consts[k] for k in ("CONNECTION", "PROVIDER", "MODEL", "ERROR_CLASS", "LIMIT_KIND") if k in consts}
    return consts.get("NAMESPACE"), names, dims


def sub_text(value):
    """The template text of a !Sub string (or a plain string)."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return value if isinstance(value, str) else ""


def check_metrics(template, problems):
    namespace, names, dims = metrics_from_rust()
    if not namespace or len(names) < 8 or len(dims) < 5:
        problems.append(f"{METRICS_RS}: NAMESPACE, METRICS or the dimension constants not found")
        return
    resources = template.get("Resources", {})
    dashboards = [r for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    if len(dashboards) != 1:
        problems.append(f"expected one AWS::CloudWatch::Dashboard, found {len(dashboards)}")
    for d in dashboards:
        body_text = sub_text(d.get("Properties", {}).get("DashboardBody"))
        try:
            body = json.loads(body_text.replace("${AWS::Region}", "us-east-1"))
        except ValueError as e:
            problems.append(f"dashboard body is not JSON: {e}")
            continue
        expressions = [
            item.get("expression", "")
            for w in body.get("widgets", [])
            for row in (w.get("properties") or {}).get("metrics", [])
            for item in row
            if isinstance(item, dict)
        ]
        searches = [
            m for e in expressions for m in re.findall(r"SEARCH\('\{([^}]*)\} MetricName=\"(\w+)\"'", e)
        ]
        if not searches:
            problems.append("the dashboard has no SEARCH expression over the vmx namespace")
        shown = set()
        for schema, metric in searches:
            ns, *keys = [k.strip() for k in schema.split(",")]
            if ns != namespace:
                problems.append(f"dashboard SEARCH namespace {ns} is not {namespace} ({METRICS_RS})")
            for k in keys:
                if k not in dims:
                    problems.append(f"dashboard dimension {k} is not one the code emits {sorted(dims)}")
            if metric not in names:
                problems.append(f"dashboard metric {metric} is not one the code emits {sorted(names)}")
            shown.add(metric)
        for m in sorted(DASHBOARD_METRICS - shown):
            problems.append(f"the dashboard does not show {m}")
    for alarm, wanted in METRIC_ALARMS.items():
        resource = resources.get(alarm)
        if not resource or resource.get("Type") != "AWS::CloudWatch::Alarm":
            problems.append(f"alarm {alarm} is missing")
            continue
        props = resource.get("Properties", {})
        stats = [props] + [
            (m.get("MetricStat") or {}).get("Metric", {}) for m in props.get("Metrics", [])
        ]
        used = set()
        for st in stats:
            if "MetricName" not in st:
                continue
            if st.get("Namespace") != namespace:
                problems.append(f"{alarm}: namespace {st.get('Namespace')} is not {namespace}")
            if st["MetricName"] not in names:
                problems.append(f"{alarm}: metric {st['MetricName']} is not one the code emits")
            for dim in st.get("Dimensions") or []:
                if dim.get("Name") not in dims:
                    problems.append(f"{alarm}: dimension {dim.get('Name')} is not one the code emits")
            used.add(st["MetricName"])
        for m in sorted(wanted - used):
            problems.append(f"{alarm} does not read {m}")
        actions = props.get("AlarmActions")
        if not (isinstance(actions, dict) and actions.get("Fn::If", [None])[0] == "HasAlarmTopic"):
            problems.append(f"{alarm}: AlarmActions must be the SNS topic under the HasAlarmTopic condition")
    if not problems:
        print(
            f"template_checks: the dashboard and {len(METRIC_ALARMS)} metric alarms name only the "
            f"namespace, metrics and dimensions of {METRICS_RS}"
        )


def main(argv):
    if len(argv) == 3 and argv[1] == "leading-keys":
        template = load(argv[2])
        problems = []
        check_leading_keys(template, problems)
        for p in problems:
            print(f"MISMATCH {p}")
        if problems:
            return 1
        print(f"leading-keys: {', '.join(WRITES)} write exactly the item kinds their roles allow")
        failed = False
        for what, bad in leading_keys_bad_copies(template):
            found = []
            check_leading_keys(bad, found)
            if found:
                print(f"self-test: {what}: rejected ({found[0]})")
            else:
                print(f"SELF-TEST FAILURE {what}: the bad copy passed")
                failed = True
        return 1 if failed else 0
    if len(argv) == 3 and argv[1] == "edge":
        return run_edge(argv[2])
    if len(argv) == 3 and argv[1] == "metrics":
        problems = []
        check_metrics(load(argv[2]), problems)
        for p in problems:
            print(f"MISMATCH {p}")
        return 1 if problems else 0
    if len(argv) != 3 or argv[1] not in ("functions", "mirror"):
        sys.stderr.write(__doc__)
        return 2
    template = load(argv[2])
    if argv[1] == "functions":
        for name, uri, binary, _ in functions(template):
            cargo = os.path.join(ROOT, uri or "", "Cargo.toml")
            package = crate_bins(cargo)[0] if os.path.isfile(cargo) else None
            print(name, uri, binary, package or "-")
        return 0
    problems, warnings = [], []
    check_table(template, problems)
    check_env(template, problems, warnings)
    check_crates(template, problems, warnings)
    check_routes(template, problems)
    check_metrics(template, problems)
    for w in warnings:
        print(f"WARNING {w}")
    for p in problems:
        print(f"MISMATCH {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
