-- Owned by crate `contributions`: the end a pass's holder was last told about (the notice
-- before a pass ends goes out once per end; a renewal moves the end).
ALTER TABLE passes ADD COLUMN ending_notice_for timestamptz;
