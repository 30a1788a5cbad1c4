"""Study files shipped with ablate (data, read with tomllib; nothing here runs)."""
