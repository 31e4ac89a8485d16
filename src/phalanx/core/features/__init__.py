"""Feature schemas, the columnar flow batch, mergeable statistics and the transforms fit from them."""
