package cli

import (
	"sort"

	"github.com/spf13/cobra"
)

func (a *app) newImageCmd() *cobra.Command {
	cmd := newGroup("image", "List the images instances are cloned from", "images", "img")
	cmd.AddCommand(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List registered images",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			list, err := c.ListImages(ctx)
			if err != nil {
				return explain(err, conn, "image", "")
			}
			if a.g.JSON {
				return printJSON(a.stdout(), list)
			}
			items := list.Items
			sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
			now := a.opts.Now()
			t := newTable(a.stdout(), "NAME", "SOURCE", "SIZE", "AGE")
			for _, im := range items {
				size := "-"
				if im.Size > 0 {
					size = fmtBytes(im.Size)
				}
				t.row(im.Name, im.Source, size, ago(now, im.CreatedAt))
			}
			return t.flush()
		},
	})
	return cmd
}
