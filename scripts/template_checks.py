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
"""

import copy
import fnmatch

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
    admin = {path for path, _, access in routes if access == "Admin"}
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
    # revoke: Update; delete: Delete; of the listing and by-hash items).
    "ConnectionsFunction": [
        ("CONN_PK", "dynamo_store", {"PutItem", "UpdateItem", "DeleteItem"}, None),
        ("NAME_PK_PREFIX", "dynamo_store", {"PutItem", "DeleteItem"}, None),
        ("API_KEYS_PK", "dynamo_api_keys", {"PutItem", "UpdateItem", "DeleteItem"}, None),
        ("API_KEY_PK_PREFIX", "dynamo_api_keys", {"PutItem", "UpdateItem", "DeleteItem"}, None),
        ("DISCH_PK_PREFIX", "dynamo_store", {"UpdateItem"}, None),
    ],
    # Caller routes: CapacityLedger admit/adjust (Update, or a transaction of Updates),
    # UsageStore::record (Update), DiscoveredCapacityStore::record_discovered (Update of the
    # connection item's `disc` and `dv`).
    "InferenceFunction": [
        ("CAP_PK_PREFIX", "dynamo_ledger", {"UpdateItem"}, None),
        ("USAGE_PK_PREFIX", "dynamo_usage", {"UpdateItem"}, None),
        ("CONN_PK", "dynamo_store", {"UpdateItem"}, {"ATTR_DISC", "ATTR_DV"}),
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
             "USAGE_PK_PREFIX", "REFRESH_PK", "DISCH_PK_PREFIX"}
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
    for w in warnings:
        print(f"WARNING {w}")
    for p in problems:
        print(f"MISMATCH {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
