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
"""

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


def main(argv):
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
