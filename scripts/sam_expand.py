#!/usr/bin/env python3
"""Expands a SAM template into plain CloudFormation, offline.

    python3 scripts/sam_expand.py template.yaml out.json [Name=Value ...]

Runs the same transform CloudFormation runs on deploy (`samtranslator`, PyPI
`aws-sam-translator`) without AWS credentials: the region comes from AWS_DEFAULT_REGION
(us-east-1 if unset), and managed policy names resolve from a fixed table instead of IAM.
The output keeps intrinsic functions (Ref, Fn::GetAtt, Fn::Sub, ...), so cfn-lint can check
what the functions' properties, policies and environments refer to, which it does not do
inside AWS::Serverless::Function.
"""

import json
import os
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform


class OfflineManagedPolicyLoader:
    """Resolves AWS managed policy names without calling IAM.

    vmx's template attaches no managed policy (every role is written out), so this only
    matters if one is added; names not listed here make the transform fail loudly.
    """

    KNOWN = (
        "AWSLambdaBasicExecutionRole",
        "AWSLambdaVPCAccessExecutionRole",
        "AWSXrayWriteOnlyAccess",
    )

    def load(self):
        return {
            name: f"arn:aws:iam::aws:policy/service-role/{name}"
            if name.startswith("AWSLambda")
            else f"arn:aws:iam::aws:policy/{name}"
            for name in self.KNOWN
        }


def package_code_uris(template):
    """Points local CodeUri paths at S3, as `sam package` does before a deploy."""
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        uri = props.get("CodeUri")
        if isinstance(uri, str) and not uri.startswith("s3://"):
            props["CodeUri"] = f"s3://vmx-offline-expansion/{uri.strip('/')}.zip"


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    source, target = argv[1], argv[2]
    parameters = {}
    for pair in argv[3:]:
        name, _, value = pair.partition("=")
        parameters[name] = value
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(source, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    package_code_uris(template)
    try:
        expanded = transform(template, parameters, OfflineManagedPolicyLoader())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"{source}: {cause.message}", file=sys.stderr)
        return 1
    with open(target, "w", encoding="utf-8") as f:
        json.dump(expanded, f, indent=2, sort_keys=False)
        f.write("\n")
    kinds = {}
    for resource in expanded.get("Resources", {}).values():
        kinds[resource["Type"]] = kinds.get(resource["Type"], 0) + 1
    summary = ", ".join(f"{n} {t}" for t, n in sorted(kinds.items()))
    print(f"expanded {source} -> {target}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
