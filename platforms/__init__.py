"""Infrastructure plugins, one package each, loaded through `edge_cloud.platforms` entry points."""
