"""Translate a SAM template (stdin, YAML or JSON) to plain CloudFormation JSON (stdout).

Uses the AWS SAM translator that cfn-lint depends on (aws-sam-translator), offline: local CodeUri
values are replaced by a dummy S3 location (as cfn-lint does), and managed policy names resolve from
the map the translator bundles. Exit 2: the YAML does not parse; 3: SAM rejects the template.
"""

import json
import logging
import os
import sys

logging.disable(logging.CRITICAL)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # partition "aws" in generated ARNs

import samtranslator  # noqa: E402
from cfnlint.decode import decode_str  # noqa: E402  (YAML with the short-form !Ref/!Sub tags)
from cfnlint.decode.utils import convert_dict  # noqa: E402
from samtranslator.parser import parser  # noqa: E402
from samtranslator.public.exceptions import InvalidDocumentException  # noqa: E402
from samtranslator.translator.translator import Translator  # noqa: E402

DUMMY_CODE = "s3://crmsync-parity-test/code.zip"


def main() -> int:
    template, matches = decode_str(sys.stdin.read())
    if matches:
        for m in matches:
            print(f"template does not parse: {m}", file=sys.stderr)
        return 2
    template = convert_dict(template)
    fn_globals = template.get("Globals", {}).get("Function", {})
    if "CodeUri" in fn_globals:
        fn_globals["CodeUri"] = DUMMY_CODE
    for res in template.get("Resources", {}).values():
        if res.get("Type") == "AWS::Serverless::Function" and "CodeUri" in res.get("Properties", {}):
            res["Properties"]["CodeUri"] = DUMMY_CODE
    data = os.path.join(os.path.dirname(samtranslator.__file__), "internal", "data", "aws_managed_policies.json")
    with open(data, encoding="utf-8") as f:
        managed = json.load(f)
    try:
        out = Translator(managed_policy_map=managed, sam_parser=parser.Parser()).translate(
            sam_template=template, parameter_values={}, passthrough_metadata=True
        )
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"SAM transform: {cause.message}", file=sys.stderr)
        return 3
    json.dump(out, sys.stdout, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
