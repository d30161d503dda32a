-- Images per camera make and model (images without a camera make in their EXIF are left out).
SELECT
    make,
    model,
    count(*) AS images,
    count(DISTINCT tenant_id) AS tenants,
    round(count(*) / sum(count(*)) OVER (), 4) AS share
FROM {{ source('lake', 'exif') }}
WHERE make IS NOT NULL
GROUP BY make, model
ORDER BY images DESC, make, model
