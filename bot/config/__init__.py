"""Configuration: the environment (or `.env`) and the TOML policy file, validated once at start-up.

Both are public interface: deployments depend on these names. Problems are collected, not raised one
at a time, so an operator fixes a broken configuration in one pass: `ConfigError.problems` holds one
line per problem, each naming the setting and what is wrong.

    settings.py        the environment: `Settings`, `load_settings` (NAME_FILE secrets included)
    policy.py          the policy file's model: `Policy`, `[policy]` (`DialingRules`), the roles
    oncall_policy.py   its `[oncall]` section: `OnCallPolicy`
    fields.py          what the sections share: a strict model, Slack IDs, people's numbers
    loading.py         reading the policy file; `load_configuration` (both, every problem at once)
    problems.py        `ConfigError`, one line per problem

What the rest of the bot uses is importable from `bot.config` itself.
"""

from bot.config.loading import MAX_POLICY_BYTES, load_configuration, load_policy
from bot.config.oncall_policy import (
    ACK_ACKNOWLEDGE,
    ACK_ANSWER,
    DEFAULT_ANSWER_TIMEOUT,
    DEFAULT_ESCALATIONS_PER_PERSON,
    MAX_ANSWER_TIMEOUT,
    MIN_ANSWER_TIMEOUT,
    RESPONDERS_EVERYONE,
    OnCallPolicy,
)
from bot.config.policy import (
    DEFAULT_BLOCKED_PREFIXES,
    DEFAULT_PER_DAY,
    DEFAULT_PER_NUMBER,
    DEFAULT_PER_USER,
    KNOWN_ROLES,
    MANAGER,
    SYSTEM_ADMINISTRATOR,
    DialingRules,
    Policy,
    example_ids,
    is_example_id,
    policy_slack_ids,
)
from bot.config.problems import ConfigError, DependencyUnavailable
from bot.config.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_EVOVOICE_URL,
    DEFAULT_POLICY_PATH,
    DEFAULT_PORT,
    DEFAULT_SLACK_API_URL,
    FILE_SUFFIX,
    Settings,
    audit_spool_path,
    database_url,
    lease_seconds,
    load_settings,
    policy_path,
    settings_from_files,
)

__all__ = [
    "ACK_ACKNOWLEDGE",
    "ACK_ANSWER",
    "DEFAULT_ANSWER_TIMEOUT",
    "DEFAULT_BLOCKED_PREFIXES",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_ESCALATIONS_PER_PERSON",
    "DEFAULT_EVOVOICE_URL",
    "DEFAULT_PER_DAY",
    "DEFAULT_PER_NUMBER",
    "DEFAULT_PER_USER",
    "DEFAULT_POLICY_PATH",
    "DEFAULT_PORT",
    "DEFAULT_SLACK_API_URL",
    "FILE_SUFFIX",
    "KNOWN_ROLES",
    "MANAGER",
    "MAX_ANSWER_TIMEOUT",
    "MAX_POLICY_BYTES",
    "MIN_ANSWER_TIMEOUT",
    "RESPONDERS_EVERYONE",
    "SYSTEM_ADMINISTRATOR",
    "ConfigError",
    "DependencyUnavailable",
    "DialingRules",
    "OnCallPolicy",
    "Policy",
    "Settings",
    "audit_spool_path",
    "database_url",
    "example_ids",
    "is_example_id",
    "lease_seconds",
    "load_configuration",
    "load_policy",
    "load_settings",
    "policy_path",
    "policy_slack_ids",
    "settings_from_files",
]
