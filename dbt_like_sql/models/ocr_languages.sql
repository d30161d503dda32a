-- Which languages the images with text are written in, their share and the mean word confidence.
SELECT
    coalesce(language, 'unknown') AS language,
    count(*) AS images,
    round(count(*) / sum(count(*)) OVER (), 4) AS share,
    round(avg(confidence), 1) AS mean_confidence
FROM (
    SELECT language, confidence FROM {{ source('lake', 'ocr') }} WHERE has_text
) AS with_text
GROUP BY 1
ORDER BY images DESC, language
