module tfchargen-go

go 1.19
