-- How often users agreed with the classifier, per model version that made the prediction.
SELECT
    model_version,
    count(*) AS feedback,
    count(*) FILTER (WHERE correct) AS agreed,
    round(count(*) FILTER (WHERE correct) / count(*), 4) AS agreement_rate,
    count(*) FILTER (WHERE NOT correct AND label IS NOT NULL) AS relabelled,
    min(created_at) AS first_feedback_at,
    max(created_at) AS last_feedback_at
FROM {{ source('lake', 'feedback') }}
WHERE model_version IS NOT NULL
GROUP BY model_version
ORDER BY model_version
