module manybuckets

go 1.19
