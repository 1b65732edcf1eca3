"""Placing renders on backgrounds: the compositor (composite), background sources (backgrounds),
the composite stage (stage) and AnyStory's multi-subject router scenes (scenes). train/ imports
this package for on-the-fly compositing."""
