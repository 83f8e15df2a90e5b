"""One folder per system; each imports only torch, Lightning, its own folder, shared/ and datamodules/."""
