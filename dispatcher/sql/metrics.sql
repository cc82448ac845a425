-- name: queue_gauges
-- Pending deliveries, the age of the oldest due one on a deliverable callback, and mail waiting to be sent.
SELECT (SELECT count(*) FROM queue) AS pending,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0) FROM queue d
         JOIN callbacks c ON c.id = d.callback_id
        WHERE d.next_attempt_at <= now() AND d.leased_until <= now()
          AND c.status IN ('active', 'failing')) AS oldest_due,
       (SELECT count(*) FROM messages WHERE status IN ('queued', 'scheduled')) AS mail_queued

-- name: callback_gauges
-- Callbacks in each state, across every account.
SELECT status, count(*) AS n FROM callbacks GROUP BY status
