"""Search spaces: operations, cells, supernets, discrete networks and genotypes."""
