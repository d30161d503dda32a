-- Images per camera make and model (images without a camera make in their EXIF are left out). Groups of
-- fewer than `min_group_size` images are left out too: no row describes one person's camera.
WITH cameras AS (
    SELECT
        make,
        model,
        count(*) AS images,
        count(DISTINCT tenant_id) AS tenants,
        round(count(*) / sum(count(*)) OVER (), 4) AS share
    FROM {{ source('lake', 'exif') }}
    WHERE make IS NOT NULL
    GROUP BY make, model
)
SELECT * FROM cameras
WHERE images >= {{ min_group_size }}
ORDER BY images DESC, make, model
