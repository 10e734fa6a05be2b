module noprof

go 1.19
