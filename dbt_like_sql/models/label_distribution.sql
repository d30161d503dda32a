-- Predicted labels per classifier version (each image counted once, under its latest classification).
-- Groups of fewer than `min_group_size` images are left out: no row describes one image.
WITH labels AS (
    SELECT
        model_version,
        label,
        count(*) AS images,
        round(count(*) / sum(count(*)) OVER (PARTITION BY model_version), 4) AS share,
        round(avg(probability), 4) AS mean_probability
    FROM {{ source('lake', 'classification') }}
    GROUP BY model_version, label
)
SELECT * FROM labels
WHERE images >= {{ min_group_size }}
ORDER BY model_version, label
