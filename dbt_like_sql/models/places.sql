-- Images per country and city, from the place each photo's GPS position names (looked up offline in the
-- EXIF stage). Photos without a position, or far from any town, are left out. Groups of fewer than
-- `min_group_size` images are left out too: no row says where one person was.
WITH places AS (
    SELECT
        country_code,
        city,
        any_value(admin1) AS admin1,
        count(*) AS images,
        count(DISTINCT tenant_id) AS tenants,
        min(datetime_utc) AS first_taken_utc,
        max(datetime_utc) AS last_taken_utc
    FROM {{ source('lake', 'place') }}
    WHERE city IS NOT NULL
    GROUP BY country_code, city
)
SELECT * FROM places
WHERE images >= {{ min_group_size }}
ORDER BY images DESC, country_code, city
