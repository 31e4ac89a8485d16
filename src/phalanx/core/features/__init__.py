"""Feature schemas, the flow batch, mergeable statistics and the transforms fit from them."""
