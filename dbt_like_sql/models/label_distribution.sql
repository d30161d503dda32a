-- Predicted labels per classifier version (each image counted once, under its latest classification).
SELECT
    model_version,
    label,
    count(*) AS images,
    round(count(*) / sum(count(*)) OVER (PARTITION BY model_version), 4) AS share,
    round(avg(probability), 4) AS mean_probability
FROM {{ source('lake', 'classification') }}
GROUP BY model_version, label
ORDER BY model_version, label
