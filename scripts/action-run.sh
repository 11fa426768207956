#!/usr/bin/env bash
# scripts/action-run.sh — the body of action.yml: checks the action's inputs and turns them into
# one deployer command line.
#
# The inputs arrive as environment variables, never pasted into a script by `${{ }}` (a pasted
# value is shell code: a branch name or a target list could run commands). Each is checked here.
#   ACTION_COMMAND               validate | plan | deploy | down           (default: deploy)
#   ACTION_CONFIG                path of deploy.yaml                        (default: deploy.yaml)
#   ACTION_TARGETS               target names, separated by spaces, commas or newlines (default: all)
#   ACTION_COMMENT               true | false: post the report as the pull request's sticky comment
#   ACTION_FAIL_ON_TEST_FAILURE  true | false: false lets the step pass when a deploy's only failures
#                                are failed tests (a broken build or config still fails it)
#   ACTION_FAIL_ON_COMMENT_ERROR true | false: true fails the step when the comment cannot be posted
#   ACTION_WORKING_DIRECTORY     where to run                               (default: .)
#   ACTION_REPORT_DIR            where deploy-report.json/.md go (default: $RUNNER_TEMP/deployer-report)
#   DEPLOYER_VENV                the virtualenv the action installed deployer into (put first on PATH)
#
# Everything GitHub-specific is deployer's own work, as in any GitHub Actions job: the job summary,
# the step outputs (status, report-path, scoring-uris, and report-artifact/report-files for the
# action's upload step), the pull-request comment, annotations and masks. This script writes
# outputs only when it stops on an input of its own, before deployer runs.
#
# Exit code: deployer's (0 success, 1 an operation failed, 2 invalid input, 70 a bug), or 2 for an
# invalid input of the action itself.
set -euo pipefail

command=${ACTION_COMMAND:-deploy}
config=${ACTION_CONFIG:-deploy.yaml}
targets_input=${ACTION_TARGETS:-}
comment=${ACTION_COMMENT:-true}
fail_on_test_failure=${ACTION_FAIL_ON_TEST_FAILURE:-true}
fail_on_comment_error=${ACTION_FAIL_ON_COMMENT_ERROR:-false}
working_directory=${ACTION_WORKING_DIRECTORY:-.}
report_dir=${ACTION_REPORT_DIR:-${RUNNER_TEMP:-.}/deployer-report}

if [[ -n ${DEPLOYER_VENV:-} ]]; then
    PATH="$DEPLOYER_VENV/bin:$PATH"
fi

# A value printed inside a workflow command (::error::...) is escaped as the runner expects, so
# that an input holding a newline cannot start a workflow command of its own.
escape() {
    local value=${1//'%'/'%25'}
    value=${value//$'\r'/'%0D'}
    printf '%s' "${value//$'\n'/'%0A'}"
}

# The outputs deployer would have written, for a run that never reached it.
input_error() {
    echo "::error title=deployer action::$(escape "$1")"
    if [[ -n ${GITHUB_OUTPUT:-} ]]; then
        printf 'status=failed\nreport-path=\nscoring-uris={}\n' >>"$GITHUB_OUTPUT"
    fi
    exit 2
}

case $command in
    validate | plan | deploy | down) ;;
    *) input_error "command must be one of validate, plan, deploy, down; got '$command'" ;;
esac
for flag in comment fail_on_test_failure fail_on_comment_error; do
    case ${!flag} in
        true | false) ;;
        *) input_error "${flag//_/-} must be true or false; got '${!flag}'" ;;
    esac
done
[[ -n $config ]] || input_error "config must name a deploy.yaml"
cd -- "$working_directory" 2>/dev/null ||
    input_error "working-directory '$working_directory' is not a directory"

# Split on commas and on whitespace (newlines included); the pattern is deploy.yaml's own rule for
# target names, so a name can never be read by deployer as an option.
read -r -d '' -a targets < <(printf '%s' "${targets_input//,/ }") || true
target_args=()
for target in "${targets[@]}"; do
    [[ $target =~ ^[a-z]([a-z0-9-]*[a-z0-9])?$ ]] ||
        input_error "'$target' is not a target name (lowercase letters, digits and '-')"
    target_args+=(-t "$target")
done

reporting=()
[[ $comment == true ]] || reporting+=(--no-comment)
[[ $fail_on_comment_error == false ]] || reporting+=(--fail-on-comment-error)

args=("$command" -c "$config")
case $command in
    validate)
        if ((${#targets[@]})); then
            echo "::notice title=deployer action::validate checks the whole deploy.yaml; targets are ignored"
        fi
        ;;
    plan)
        args+=("${target_args[@]}" --report-dir "$report_dir" "${reporting[@]}")
        ;;
    deploy)
        args+=("${target_args[@]}" --report-dir "$report_dir" "${reporting[@]}")
        [[ $fail_on_test_failure == true ]] || args+=(--ignore-test-failures)
        ;;
    down)
        ((${#targets[@]})) || input_error "down needs the targets to remove (input 'targets')"
        args+=("${target_args[@]}")
        ;;
esac

echo "deployer ${args[*]}"
exec deployer "${args[@]}"
