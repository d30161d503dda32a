-- One row per tenant, rolled up from daily_ingest (so the two can never disagree).
WITH days AS (
    SELECT * FROM {{ ref('daily_ingest') }}
)
SELECT
    tenant_id,
    sum(images)::BIGINT AS images,
    sum(bytes)::BIGINT AS bytes,
    sum(done)::BIGINT AS done,
    sum(failed)::BIGINT AS failed,
    round(sum(failed) / sum(images), 4) AS failure_rate,
    count(*) AS active_days,
    min(date) AS first_day,
    max(date) AS last_day
FROM days
GROUP BY tenant_id
ORDER BY images DESC, tenant_id
