//! Tests for cron schedules.
