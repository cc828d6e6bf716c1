"""Request and response models of the prediction service (they make the OpenAPI schema).

Every request field has a declared range, the one every layer behind it handles, shown in the schema
(/docs) and answered with a 422 naming the field:
- issue `id` and `number`: 1 <= n < 2**40. The event store packs (repository code, id or number) into one
  int64 key (`features.store.ISSUE_BITS`): a larger value would silently alias another repository's issue.
  GitHub's issue ids are near 4e9 (2**40 is about 1.1e12) and numbers below 1e6.
- `user.id`: 1 <= n < 2**39. The store packs (repository code, user id) the same way, with half of the
  space kept for users known only by login (`features.store.USER_BITS`); GitHub's user ids are near 3e8.
- times (`created_at`, `closed_at`, `updated_at`, `scoring_time`): from 1970-01-01T00:00:00Z to before
  2200-01-01T00:00:00Z, after conversion to UTC (an offset up to +-23:59 is applied first; a time without
  one is read as UTC). That is inside pandas' datetime64[ns] range (1677-09-21 .. 2262-04-11) with decades
  to spare for the arithmetic the layers do (the 7-day horizon, `?days=` windows of up to 10 years), inside
  the range where float64 microseconds are exact (|t| < 2**53 us, 1684 .. 2255), and never before the
  Unix epoch (GitHub started in 2008). Accepted times are returned as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from issue_assets.features.catalog import PREDICTION_MEANING
from issue_assets.features.store import ISSUE_BITS, USER_BITS
from issue_assets.lake.keys import REPOSITORY_PATTERN

ISSUE_KEY_LIMIT = ISSUE_BITS  # ids and numbers: 1 <= n < 2**40 (the store's packed (repository, issue) key)
USER_ID_LIMIT = USER_BITS // 2  # user ids: 1 <= n < 2**39 (the upper half codes users known by login only)
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
TIME_RANGE = (f"from {EARLIEST_TIME.isoformat().replace('+00:00', 'Z')} to before "
              f"{LATEST_TIME.isoformat().replace('+00:00', 'Z')} (UTC; an offset up to +-23:59 is applied first, "
              "a time without one is read as UTC)")
_ONE_US = timedelta(microseconds=1)
_LATEST_US = (LATEST_TIME - EARLIEST_TIME) // _ONE_US


def _in_time_range(value: datetime) -> datetime:
    """The time as an aware UTC datetime, or a 422 naming the range. The offset is applied by subtraction,
    which cannot overflow (`astimezone` can, at year 1 or 9999 with an offset)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    us = (aware - EARLIEST_TIME) // _ONE_US
    if not 0 <= us < _LATEST_US:
        raise PydanticCustomError("datetime_range", "{value} is outside the supported range: {range}",
                                  {"value": value.isoformat(), "range": TIME_RANGE})
    return EARLIEST_TIME + us * _ONE_US


#: a request time: any ISO 8601 (or Unix seconds) pydantic reads, within TIME_RANGE, returned in UTC
RequestTime = Annotated[datetime, AfterValidator(_in_time_range)]


def _time(description: str, default: Any = ...) -> Any:
    return Field(default, description=f"{description}; {TIME_RANGE}")


class GitHubUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    login: StrictStr | None = None
    id: StrictInt | None = Field(None, ge=1, lt=USER_ID_LIMIT,
                                 description="GitHub's user id, 1 <= id < 2**39 (549755813888)")
    type: StrictStr | None = None


class GitHubLabel(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None


class GitHubIssue(BaseModel):
    """An issue as GitHub's REST API returns it; fields the model does not read are accepted and kept."""

    model_config = ConfigDict(extra="allow")
    id: StrictInt = Field(ge=1, lt=ISSUE_KEY_LIMIT, description="GitHub's issue id, 1 <= id < 2**40 (1099511627776)")
    number: StrictInt = Field(ge=1, lt=ISSUE_KEY_LIMIT,
                              description="The issue number in its repository, 1 <= number < 2**40")
    created_at: RequestTime = _time("ISO 8601")
    title: StrictStr = ""
    body: StrictStr | None = None
    user: GitHubUser | None = None
    author_association: StrictStr | None = None
    state: StrictStr | None = "open"
    closed_at: RequestTime | None = _time("when it was closed (null: open)", None)
    updated_at: RequestTime | None = _time("not read by the model", None)
    locked: StrictBool | None = None
    labels: list[GitHubLabel | StrictStr] = []
    pull_request: dict[str, Any] | None = Field(None, description="present (not null) for a pull request")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository: StrictStr = Field(pattern=REPOSITORY_PATTERN, description="OWNER/NAME; its lake history is the context")
    issue: GitHubIssue | None = Field(None, description="one issue (give this or `issues`)")
    issues: list[GitHubIssue] | None = Field(None, description="several issues (give this or `issue`)")
    scoring_time: RequestTime | None = _time(
        "prediction time T (default: now); an issue created after it is refused (422)", None)
    top_k: StrictInt = Field(5, ge=0, le=50, description="contributions reported per issue")
    include_features: StrictBool = Field(False, description="also return each scored issue's feature values")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.issue is None) == (self.issues is None):
            raise ValueError("give exactly one of `issue` (an object) or `issues` (a list)")
        if self.issues is not None and len(self.issues) == 0:
            raise ValueError("`issues` is empty")
        return self

    def items(self) -> list[GitHubIssue]:
        return [self.issue] if self.issue is not None else list(self.issues or [])


class Contribution(BaseModel):
    feature: str
    value: float | None = Field(description="the feature's value (null when missing)")
    contribution: float = Field(description="SHAP contribution in the booster's log-odds")


class IssuePrediction(BaseModel):
    repository: str
    id: int
    number: int
    title: str | None = None
    created_at: datetime
    status: str = Field(description="`scored`: still inside its 7-day window at the scoring time, has a "
                                    "probability; `decided`: its outcome is already known, no probability")
    closed_within_7d: bool | None = Field(None, description="the known outcome of a decided issue (null when scored)")
    prediction_time: datetime | None = Field(None, description="t, the time the features are computed at (scored)")
    hours_observed: float | None = Field(None, description="the issue's age at the scoring time, in hours")
    probability: float | None = Field(None, description=PREDICTION_MEANING)
    rank: int | None = Field(None, description="1 = most likely closed within 7 days, among the issues scored "
                                               "together (null when decided)")
    model_version: str
    scoring_time: datetime
    top_contributions: list[Contribution]
    features: dict[str, float | None] | None = Field(None, description="feature values (include_features)")


class PredictResponse(BaseModel):
    model_version: str
    scoring_time: datetime
    count: int
    predictions: list[IssuePrediction]


class BatchPredictionsResponse(BaseModel):
    repository: str
    scoring_time: datetime | None
    model_versions: list[str]
    days: float | None
    count: int
    predictions: list[IssuePrediction]
    not_found: list[int] = Field([], description="with `numbers`: issues neither the lake nor the source has")
    pull_requests: list[int] = Field([], description="with `numbers`: numbers that are pull requests (not scored)")


class ModelResponse(BaseModel):
    version: str
    loaded_at: datetime
    as_of: str | None = None
    created_at: str | None = None
    feature_count: int
    calibration: str | None = None
    metrics: dict[str, Any] = {}
    row_counts: dict[str, Any] = {}


class HealthResponse(BaseModel):
    status: str
    model_version: str | None = None
    detail: str | None = None


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None
