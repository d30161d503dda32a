-- Which languages the images with text are written in, their share and the mean word confidence.
-- Languages of fewer than `min_group_size` images are left out: no row describes one image.
WITH languages AS (
    SELECT
        coalesce(language, 'unknown') AS language,
        count(*) AS images,
        round(count(*) / sum(count(*)) OVER (), 4) AS share,
        round(avg(confidence), 1) AS mean_confidence
    FROM (
        SELECT language, confidence FROM {{ source('lake', 'ocr') }} WHERE has_text
    ) AS with_text
    GROUP BY 1
)
SELECT * FROM languages
WHERE images >= {{ min_group_size }}
ORDER BY images DESC, language
