"""What a user pastes into a bug report: versions, device, tracking, DVC remote, champion."""
