"""SQL models over the Parquet lake (`dbt_like_sql/`): loading, compiling, building, testing, querying."""

from imago_pipeline.core.analytics.analytics import QueryRejected, describe_views, open_analytics, run_query
from imago_pipeline.core.analytics.build import BuiltModel, DataTestOutcome, build_all, build_model, run_tests
from imago_pipeline.core.analytics.project import DataTest, Model, ModelError, SqlProject, load_project, model_file

__all__ = [
    "BuiltModel", "DataTest", "DataTestOutcome", "Model", "ModelError", "QueryRejected", "SqlProject", "build_all",
    "build_model", "describe_views", "load_project", "model_file", "open_analytics", "run_query", "run_tests",
]
