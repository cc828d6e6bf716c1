"""Request and response models of the prediction service (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from issue_assets.features.catalog import PREDICTION_MEANING

REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
INT64_MAX = 2**63 - 1


class GitHubUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    login: StrictStr | None = None
    id: StrictInt | None = Field(None, ge=-INT64_MAX, le=INT64_MAX)
    type: StrictStr | None = None


class GitHubLabel(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None


class GitHubIssue(BaseModel):
    """An issue as GitHub's REST API returns it; fields the model does not read are accepted and kept."""

    model_config = ConfigDict(extra="allow")
    id: StrictInt = Field(gt=0, le=INT64_MAX, description="GitHub's issue id")
    number: StrictInt = Field(gt=0, le=INT64_MAX, description="The issue number in its repository")
    created_at: datetime = Field(description="ISO 8601; without an offset it is read as UTC")
    title: StrictStr = ""
    body: StrictStr | None = None
    user: GitHubUser | None = None
    author_association: StrictStr | None = None
    state: StrictStr | None = "open"
    closed_at: datetime | None = None
    updated_at: datetime | None = None
    locked: StrictBool | None = None
    labels: list[GitHubLabel | StrictStr] = []
    pull_request: dict[str, Any] | None = Field(None, description="present (not null) for a pull request")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository: StrictStr = Field(pattern=REPOSITORY_PATTERN, description="OWNER/NAME; its lake history is the context")
    issue: GitHubIssue | None = Field(None, description="one issue (give this or `issues`)")
    issues: list[GitHubIssue] | None = Field(None, description="several issues (give this or `issue`)")
    scoring_time: datetime | None = Field(
        None, description="prediction time T (default: now); an issue created after it is refused (422)")
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
