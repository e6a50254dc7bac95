-- The successor a refresh token got when it was spent, sealed (AES-256-GCM)
-- under a key derived from the spent token itself: a retry or a second tab
-- presenting the spent token within the reuse grace gets the very same
-- successor back, and nobody without the spent token can read it.
ALTER TABLE refresh_tokens ADD COLUMN successor_sealed TEXT;
