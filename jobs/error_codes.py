"""Every error code a user can see, with one line of meaning each.

The API's error envelope (`{"error": {"code", "message"}}`), an item's `error.code`, the
manifest, the CLI and the logs all use these values, and nothing else: `ApiError` and the
provider error tree take an `ErrorCode`, so mypy refuses a code that is not listed here.
Codes are part of the contract (clients match on them): add new ones, never rename one.
The README's error table is this list.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # --- the request itself (HTTP 4xx from the API, exit code 2 from the CLI) ---
    INVALID_REQUEST = "invalid_request"  # the body does not match the schema
    MALFORMED_JSON = "malformed_json"  # the body is not (UTF-8) JSON
    PAYLOAD_TOO_LARGE = "payload_too_large"  # over a byte limit (request, upload, provider)
    UNAUTHORIZED = "unauthorized"  # no valid API key
    NOT_FOUND = "not_found"  # no such job/item/route for this key
    METHOD_NOT_ALLOWED = "method_not_allowed"  # the route exists, the method does not
    HTTP_ERROR = "http_error"  # another HTTP-level refusal (the status says which)
    INVALID_CURSOR = "invalid_cursor"  # a pagination cursor this API did not issue
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # same key, different body
    JOB_CANCELED = "job_canceled"  # retry asked of a canceled job
    FORMAT_UNAVAILABLE = "format_unavailable"  # an output format the item was not stored in
    INVALID_CHARACTERS = "invalid_characters"  # a NUL or lone surrogate in a path, query or field
    HEADERS_TOO_LARGE = "headers_too_large"  # request line and headers over the server's cap (431)
    REQUEST_TIMEOUT = "request_timeout"  # the request head did not arrive in time (408)
    # --- what a job body asks for ---
    NO_ITEMS = "no_items"  # a job with nothing to do
    TOO_MANY_ITEMS = "too_many_items"  # over SPEECHBATCH_MAX_ITEMS_PER_JOB
    INVALID_ITEM_ID = "invalid_item_id"  # an item id that cannot name a file
    DUPLICATE_ITEM_ID = "duplicate_item_id"  # two items with one id
    UNKNOWN_PROVIDER = "unknown_provider"  # not a provider speechbatch knows
    UNKNOWN_MODEL = "unknown_model"  # not a model of that provider (or kind)
    MODEL_DEPRECATED = "model_deprecated"  # retired by the vendor; the message names the successor
    UNKNOWN_VOICE = "unknown_voice"  # not a voice of that model
    UNSUPPORTED_LANGUAGE = "unsupported_language"  # the model does not speak it
    INVALID_OPTION = "invalid_option"  # an option value the provider cannot take
    INVALID_OUTPUT_PREFIX = "invalid_output_prefix"  # an output prefix that could escape
    EMPTY_TEXT = "empty_text"  # a TTS item without text
    INVALID_TEXT = "invalid_text"  # text with control characters
    TEXT_TOO_LONG = "text_too_long"  # over the model's per-request character limit
    # --- cost (issue 12) ---
    INVALID_BUDGET = "invalid_budget"  # a budget the job's prices cannot turn into a cap
    BUDGET_EXCEEDED = "budget_exceeded"  # not run: the job's budget cap was reached
    # --- STT sources ---
    MISSING_SOURCE = "missing_source"  # an STT item without a source
    INVALID_SOURCE = "invalid_source"  # not an upload:// or http(s) source
    BAD_URL = "bad_url"  # a source URL that does not parse safely
    BAD_PORT = "bad_port"  # a source URL port outside 1-65535
    UNSUPPORTED_SCHEME = "unsupported_scheme"  # not http:// or https://
    CREDENTIALS_IN_URL = "credentials_in_url"  # user:pass@ in a source URL
    FORBIDDEN_ADDRESS = "forbidden_address"  # resolves to a private/loopback address
    FORBIDDEN_SOURCE = "forbidden_source"  # a source URL refused by the network policy
    SOURCE_NOT_FOUND = "source_not_found"  # the upload is gone
    SOURCE_UNAVAILABLE = "source_unavailable"  # the source URL answered with an error
    SOURCE_TIMEOUT = "source_timeout"  # the source URL did not answer in time
    SOURCE_TOO_LARGE = "source_too_large"  # over SPEECHBATCH_MAX_SOURCE_BYTES
    TOO_MANY_REDIRECTS = "too_many_redirects"  # the source URL redirects in circles
    # --- webhooks ---
    INVALID_WEBHOOK_URL = "invalid_webhook_url"  # a webhook_url that does not parse safely
    FORBIDDEN_WEBHOOK_URL = "forbidden_webhook_url"  # a webhook_url naming a private address
    EMPTY_AUDIO = "empty_audio"  # a recording (upload, source or provider answer) of 0 bytes
    UNSUPPORTED_AUDIO = "unsupported_audio"  # not audio we (or the provider) can read
    AUDIO_TOO_LONG = "audio_too_long"  # more samples than SPEECHBATCH_MAX_DECODE_SAMPLES
    # --- archive sources (issue 12: `source{prefix, pattern, ...}`) ---
    INVALID_ARCHIVE = "invalid_archive"  # a malformed prefix, pattern or filter
    ARCHIVE_FORBIDDEN = "archive_forbidden"  # a prefix not in SPEECHBATCH_ARCHIVE_BUCKETS
    OUTPUT_FORBIDDEN = "output_forbidden"  # an output.url not a write: archive entry
    OUTPUT_UNAVAILABLE = "output_unavailable"  # an output.url bucket that does not exist
    ARCHIVE_UNAVAILABLE = "archive_unavailable"  # the prefix could not be listed (item error)
    UNREADABLE_KEY = "unreadable_key"  # an archive key no store can read safely (item error)
    # --- a provider call (an item's error; the CLI exits 1) ---
    PROVIDER_ERROR = "provider_error"  # base code of the provider error tree
    PROVIDER_TRANSIENT = "provider_transient"  # a failure worth retrying later
    RATE_LIMITED = "rate_limited"  # 429 or a concurrency cap: slowed down, not failed
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # 5xx, refused or reset connection
    PROVIDER_TIMEOUT = "provider_timeout"  # no (complete) answer in time
    CIRCUIT_OPEN = "circuit_open"  # the provider fails for every worker: calls paused
    PROVIDER_CONFLICT = "provider_conflict"  # 409: a conflicting request still running
    PROVIDER_REJECTED = "provider_rejected"  # a permanent refusal with no finer code
    INVALID_INPUT = "invalid_input"  # the provider rejected the request as invalid
    PROVIDER_AUTH_FAILED = "provider_auth_failed"  # the credential was refused
    PROVIDER_QUOTA_EXCEEDED = "provider_quota_exceeded"  # out of credit or quota
    MISSING_API_KEY = "missing_api_key"  # no credential configured for the provider
    INVALID_BASE_URL = "invalid_base_url"  # SPEECHBATCH_<PROVIDER>_BASE_URL is unusable
    EMPTY_RESPONSE = "empty_response"  # the provider answered 200 with no body
    UNEXPECTED_RESPONSE = "unexpected_response"  # a body that is not the documented shape
    BAD_PROVIDER_AUDIO = "bad_provider_audio"  # audio from the provider that does not decode
    BAD_PROVIDER_OUTPUT = "bad_provider_output"  # a 200 that is not what was asked (HTML, NaN)
    PROVIDER_RESPONSE_TOO_LARGE = "provider_response_too_large"  # over the size cap
    ENGINE_MISSING = "engine_missing"  # the local engine's program is not installed
    ENGINE_FAILED = "engine_failed"  # the local engine crashed on the input
    # --- the CLI or a process cannot do its work (exit code 2; job_not_finished exits 1) ---
    INVALID_CONFIGURATION = "invalid_configuration"  # a setting (environment, .env) is unusable
    API_UNREACHABLE = "api_unreachable"  # SPEECHBATCH_API_URL does not answer
    DATABASE_UNAVAILABLE = "database_unavailable"  # the database is missing or unreachable
    BROKER_UNAVAILABLE = "broker_unavailable"  # Redis is unset or unreachable
    STORAGE_UNAVAILABLE = "storage_unavailable"  # the bucket or directory cannot be used
    JOB_NOT_FINISHED = "job_not_finished"  # outputs asked of a job that is still running
    API_REQUIRED = "api_required"  # a command that needs SPEECHBATCH_API_URL (schedules)
    # --- schedules (issue 12) ---
    INVALID_CRON = "invalid_cron"  # not a five-field cron expression that ever fires
    INVALID_TIMEZONE = "invalid_timezone"  # not an IANA timezone name
    INVALID_TEMPLATE = "invalid_template"  # an unknown placeholder or malformed offset
    TEMPLATE_TOO_LARGE = "template_too_large"  # a job template over its byte cap
    SCHEDULE_NAME_TAKEN = "schedule_name_taken"  # the tenant has a schedule of that name
    TOO_MANY_SCHEDULES = "too_many_schedules"  # over SPEECHBATCH_MAX_SCHEDULES_PER_TENANT
    # --- our own side ---
    LEASE_EXPIRED = "lease_expired"  # the worker stopped answering; the item was re-queued
    INTERNAL_ERROR = "internal_error"  # a bug or an unexpected outage on our side
