-- Images per tenant and upload day: how many, how many bytes, and how their processing ended.
SELECT
    tenant_id,
    date,
    count(*) AS images,
    sum(byte_size)::BIGINT AS bytes,
    count(*) FILTER (WHERE status = 'done') AS done,
    count(*) FILTER (WHERE status = 'failed') AS failed
FROM {{ source('lake', 'images') }}
GROUP BY tenant_id, date
ORDER BY tenant_id, date
