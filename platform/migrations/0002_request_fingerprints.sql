-- The fingerprint of the HTTP request behind an idempotent command (Idempotency-Key):
-- a retry with the same key but another body is told so instead of getting this outcome.
ALTER TABLE operations ADD COLUMN request_fingerprint text;
