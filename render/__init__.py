"""Characters (loading, the procedural generator, the canonical skeleton and bone maps), poses,
scene specs and their seeded sampling, the standardized camera, renderer backends and contact
sheets. Imports no renderer at package import: backends load pyrender or bpy when made."""
