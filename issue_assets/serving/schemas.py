"""Request and response models of the prediction service (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"


class GitHubUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    login: StrictStr | None = None
    id: StrictInt | None = None
    type: StrictStr | None = None


class GitHubLabel(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None


class GitHubIssue(BaseModel):
    """An issue as GitHub's REST API returns it; fields the model does not read are accepted and kept."""

    model_config = ConfigDict(extra="allow")
    id: StrictInt = Field(gt=0, description="GitHub's issue id")
    number: StrictInt = Field(gt=0, description="The issue number in its repository")
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
        None, description="prediction time (default: now, or the newest created_at if that is later)")
    top_k: StrictInt = Field(5, ge=0, le=50, description="contributions reported per issue")

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
    prediction_time: datetime
    hours_observed: float | None = None
    probability: float = Field(description="probability the issue is closed within 7 days of creation")
    rank: int = Field(description="1 = most likely closed within 7 days, among the issues scored together")
    model_version: str
    scoring_time: datetime
    top_contributions: list[Contribution]


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
