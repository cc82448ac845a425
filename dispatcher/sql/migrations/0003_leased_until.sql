-- 0003: a claim's lease gets its own column, so a claim is a heap-only (HOT) update that writes no
-- index entries; half of each page of `deliveries` is kept free for that.
-- Online to apply: the new column has a constant default (no table rewrite), and fillfactor applies to
-- pages written from now on. But do not run version 2 and version 3 workers side by side: a version 2
-- worker leases by pushing next_attempt_at forward and does not see version 3 leases, so while both
-- claim, some deliveries can be sent twice (delivery is at-least-once). Stop the old workers first.
ALTER TABLE deliveries ADD COLUMN leased_until timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE deliveries SET (fillfactor = 50);
