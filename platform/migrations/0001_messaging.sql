-- Messaging tables every PostgreSQL service shares.

-- Ids of messages already handled: inserted first in the transaction that applies a
-- message, so a redelivery (or a concurrent duplicate) finds it and changes nothing.
CREATE TABLE inbox (
    message_id uuid PRIMARY KEY,
    handled_at timestamptz NOT NULL DEFAULT now()
);

-- Outcome of every command, committed with its effect; answers GET /v1/operations/{id}.
CREATE TABLE operations (
    id uuid PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('succeeded', 'rejected')),
    rejection jsonb,
    resource jsonb,
    completed_at timestamptz NOT NULL
);

-- Events committed with the change that caused them, published by the relay with
-- confirms and deleted only after the broker confirmed them.
CREATE TABLE outbox (
    seq bigserial PRIMARY KEY,
    message_id uuid NOT NULL UNIQUE,
    routing_key text NOT NULL,
    envelope jsonb NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
