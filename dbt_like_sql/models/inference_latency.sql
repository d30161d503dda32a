-- Synchronous predictions (POST /api/predict) per model version: volume, errors, and latency
-- percentiles of the successful ones (linear interpolation, as numpy's percentile).
WITH calls AS (
    SELECT coalesce(model_version, 'unknown') AS model_version, success, latency_ms
    FROM {{ source('lake', 'inference_log') }}
)
SELECT
    model_version,
    count(*) AS requests,
    count(*) FILTER (WHERE success) AS successes,
    count(*) FILTER (WHERE NOT success) AS errors,
    round(count(*) FILTER (WHERE NOT success) / count(*), 4) AS error_rate,
    round(quantile_cont(latency_ms, 0.50) FILTER (WHERE success), 1) AS p50_ms,
    round(quantile_cont(latency_ms, 0.95) FILTER (WHERE success), 1) AS p95_ms,
    round(quantile_cont(latency_ms, 0.99) FILTER (WHERE success), 1) AS p99_ms
FROM calls
GROUP BY model_version
ORDER BY model_version
