module coderef

go 1.19
